"""DSR platforms plugged in natively: Transcend (its server webhook and pull mode) and Ketch (its DSR
forwarder, ``dsr/v1``). A platform's request becomes ledger requests (one per user id the identity
mapping finds), and its answer is delivered to the platform like a webhook: durable, retried."""
