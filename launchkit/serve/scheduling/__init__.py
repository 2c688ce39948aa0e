"""Which request runs where and when: the models a server holds (``registry``) and each model
version's queue with its batching policy (``batcher``), pure asyncio (no processes)."""
