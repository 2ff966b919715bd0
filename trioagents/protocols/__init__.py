"""Sans-I/O codecs, one module per wire format: bytes and dicts in, UAMP events out, and back.

Nothing here imports trio, httpx or hypercorn; every module is tested synchronously.
"""
