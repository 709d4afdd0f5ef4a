"""What a tensor is called in a drawing: any `.name` (or `names=` key) made into short, printable text.

A name is the user's, so it may be anything: not a str, a NUL or other control character, a megabyte of
text, DOT or HTML syntax. The drawing shows it as plain text: `str()` of it, control characters as
visible symbols (NUL as ␀), cut to MAX_NAME characters with an ellipsis (dot refuses quoted strings over
16,384 bytes). Escaping for DOT itself (backslashes, quotes, '<…>' read as HTML) is viz.dot's job.
"""
MAX_NAME = 60


def display_name(name, limit=MAX_NAME):
    """Printable text for `name` (see the module docstring); None stays None."""
    if name is None:
        return None
    text = name if isinstance(name, str) else str(name)
    if len(text) <= limit and text.isprintable():  # the usual s(3): nothing to do (10,000 names at T = 1000)
        return text
    text = "".join(_visible(ch) for ch in text[:limit + 1])
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _visible(ch):
    code = ord(ch)
    if code < 0x20:
        return chr(0x2400 + code)  # the Control Pictures block: ␀ ␁ … ␟
    if code == 0x7F:
        return "␡"
    if 0x80 <= code < 0xA0 or 0xD800 <= code < 0xE000:  # C1 controls, lone surrogates (not encodable)
        return "�"
    return ch


def shortest_unique_suffixes(paths):
    """The shortest dotted tail of each path that no other path in the list shares ('encoder.cell.W',
    'cell.W' -> 'encoder.cell.W', 'cell.W'; 'a.embed.weight', 'head.weight' -> 'embed.weight',
    'head.weight'); None where a path is None."""
    parts = [None if p is None else p.split(".") for p in paths]
    found = []
    for i, mine in enumerate(parts):
        others = [q for j, q in enumerate(parts) if j != i and q is not None]
        k = 1
        while mine is not None and k < len(mine) and any(q[-k:] == mine[-k:] for q in others):
            k += 1  # the whole path, at the latest, is unique
        found.append(None if mine is None else ".".join(mine[-k:]))
    return found
