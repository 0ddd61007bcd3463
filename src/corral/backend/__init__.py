"""Node-side code: the RPC dispatcher and the functions it runs."""
