"""Checks of the Trainer's arguments, in Lightning's formats; errors are one line saying what to change."""
import datetime
import math


class MisconfigurationError(ValueError):
    """Bad arguments or a model the Trainer cannot run; the message is one line saying what to change."""


def choice(name, value, allowed):
    if value not in allowed:
        raise MisconfigurationError(f"{name}={value!r} is not supported; use one of {', '.join(map(repr, allowed))}")
    return value


def parse_max_time(value):
    """Lightning's formats: "DD:HH:MM:SS", a dict of timedelta arguments, a timedelta, or seconds."""
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return datetime.timedelta(**value).total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) == 4 and all(p.strip().isdigit() for p in parts):
            d, h, m, s = map(int, parts)
            return datetime.timedelta(days=d, hours=h, minutes=m, seconds=s).total_seconds()
    raise MisconfigurationError(f"max_time={value!r}: use 'DD:HH:MM:SS', a dict like {{'hours': 1}}, or seconds")


def limit_batches(name, value, total):
    """Lightning's limit_*_batches: None = all, int = that many batches, float = that fraction of the epoch."""
    if value is None:
        return total
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise MisconfigurationError(f"{name}={value!r}: use an int number of batches or a float fraction in [0, 1]")
    if isinstance(value, float):
        if value > 1:
            raise MisconfigurationError(f"{name}={value!r}: a float is a fraction of the epoch and must be <= 1")
        if math.isinf(total):
            raise MisconfigurationError(f"{name}={value!r}: a fraction needs a dataloader with a length")
        return int(total * value)
    return min(value, total)
