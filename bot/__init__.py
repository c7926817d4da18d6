"""Brixo feedback relay: 👍/👎 on an AI assistant's chat replies, delivered to Brixo."""

__version__ = "0.1.0"
