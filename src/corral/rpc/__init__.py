"""Node RPC: the call table (defs), records (types) and the client."""
