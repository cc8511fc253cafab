"""The workflow runtime: sessions, handler phases, the mutation ledger, registration."""
