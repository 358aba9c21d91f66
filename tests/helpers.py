"""Helpers shared by the bundle tests."""


def error_chain(exc: BaseException) -> str:
    """Messages of an exception and its causes (config expressions wrap errors in RuntimeError)."""
    parts = []
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)
