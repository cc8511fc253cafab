"""Conveyor's operator CLI: `conveyor jobs|schedules|runs|queues|dead-letters|topics|events|
journal|submit`, a client of the services' gRPC APIs (with the SDK's channel and typed
errors). It imports nothing of the server side; see docs/cli.md."""
