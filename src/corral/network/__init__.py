"""Node-side NIC networking for KVM instances.

Layer: driver (node side). ``tap`` opens taps, ``nicenv`` builds and parses
the Ganeti-compatible ``kvm-ifup`` environment (pure), ``nicfiles`` records
which tap belongs to which NIC, ``setup`` wires taps into bridges and routing
tables over netlink, ``ifup`` holds the ``kvm-ifup``/``kvm-ifdown`` console
scripts and ``runner`` runs them from noded. Open vSwitch and OVN:
``ovsdb`` (cached ovsdbapp connections, shared), ``ovs`` (taps as ports in
the node's OVSDB), ``ovsnic`` (NIC modes ``openvswitch``/``ovn``),
``ovn_nb`` (the CMS side: logical switches/ports, the migration options) and
``ovn_sb`` (read-only binding state and a binding watcher).

Importing this package imports nothing: ``kvm-ifup`` starts once per NIC on
every instance start, so each module imports its heavy dependencies lazily.
"""
