"""HL7 v2 from the sites' RIS over MLLP: patients (ADT), merges, orders (ORM/OMI) and reports (ORU).

``messages`` reads a message and builds its acknowledgement, ``patient`` turns a PID into an MPI identity,
``handlers`` applies each message type, ``receiver`` is the one path every message takes (sender check,
duplicates, dead letters), ``listener`` is the MLLP server, ``deadletter`` lists and replays refused messages.
"""
