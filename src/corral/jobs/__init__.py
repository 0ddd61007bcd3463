"""The job queue: model, SQLite store, scheduler and processor."""
