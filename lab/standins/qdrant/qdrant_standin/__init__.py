"""QueryGPT lab stand-in for the Qdrant REST API.

LAB TEST FIXTURE - NOT QDRANT. It exists because real Qdrant binaries cannot be
downloaded in the lab; it speaks enough of upstream's REST API for the
qdrant-client calls our project makes. Never deploy it to production.
"""
