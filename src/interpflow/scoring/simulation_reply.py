"""The simulator's reply method, for providers without prompt logprobs: the simulator writes the numbers.

Each test window is listed as numbered tokens; the simulator writes one line per window with one integer
0-10 per token after the token's number ("1: 1=0 2=7 3=0"): the numbers keep a model counting right, where a
bare row of values drifts to the wrong length. Where the reply carries token logprobs, each value becomes its
expected value over the alternatives 0-10 of its token. There is no worked example: a small model copies an
example's active positions into every answer (what interpflow's first simulator scored), so only the format
is described, with a template line per window.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import numpy as np

MAX_VALUE = 10
MIN_TOP_LOGPROBS = MAX_VALUE + 1  # room for every value 0-10 among a number token's alternatives

REPLY_TASK = """\
You predict where a latent of a language model is active. A latent is an internal feature that becomes \
active on certain tokens of a text. You get an explanation of what the latent detects, followed by \
numbered excerpts; each excerpt is split into numbered tokens.

For every token, predict the latent's activation on that token as a whole number from 0 to 10: 0 means \
not active, 10 means as active as the latent ever gets, numbers in between mean weaker activation. Tokens \
that fit the explanation get high numbers, all others 0.

Reply with one line per excerpt, in the excerpts' order. A line starts with the excerpt's number and a \
colon; then, for every token of the excerpt in order, the token's number, an equals sign and your \
prediction, separated by spaces. Write nothing else."""

# An answer line: "3: 1=0 2=7", also "Excerpt 3: ..." or "**3:** ..." (small models add markdown).
_LINE = re.compile(r"^[ \t>*#-]*(?:(?:excerpt|example)[ \t]*)?(\d+)[ \t]*\**[ \t]*:(.*)$", re.I | re.M)
_ITEM = re.compile(r"[^\s,]+")


def _quote(text: str) -> str:
    """JSON-quote text so spaces and line breaks stay visible on one line."""
    return json.dumps(text, ensure_ascii=False)


def token_list(token_strs: Sequence[str]) -> str:
    """One line of numbered, quoted tokens: 1 "The" | 2 " cat"."""
    return " | ".join(f"{i} {_quote(str(t))}" for i, t in enumerate(token_strs, start=1))


def _template(k: int, n: int) -> str:
    """The reply line excerpt k of n tokens asks for: "k: 1=<number> 2=<number> ... n=<number>"."""
    slots = [f"{i}=<number>" for i in range(1, n + 1)]
    return f"{k}: " + " ".join(slots if n <= 3 else [*slots[:2], "...", slots[-1]])


def reply_user(explanation: str, windows: Sequence[Sequence[str]]) -> str:
    """The simulator's per-prompt message: the explanation, the numbered token lists, the reply template."""
    if not windows:
        raise ValueError("a simulation prompt needs at least one window")
    blocks = [
        f"Excerpt {k} ({len(toks)} tokens): {_quote(''.join(map(str, toks)))}\n{token_list(toks)}"
        for k, toks in enumerate(windows, start=1)
    ]
    template = "\n".join(_template(k, len(toks)) for k, toks in enumerate(windows, start=1))
    return (
        f"Explanation: {_quote(explanation)}\n\n" + "\n\n".join(blocks)
        + f"\n\nReply with {len(windows)} line{'s' if len(windows) != 1 else ''}:\n{template}"
    )  # fmt: skip


def reply_messages(explanation: str, windows: Sequence[Sequence[str]]) -> list[dict]:
    """Chat messages asking the simulator to write one 0-10 activation per token of each window."""
    return [
        {"role": "system", "content": REPLY_TASK},
        {"role": "user", "content": reply_user(explanation, windows)},
    ]


def reply_budget(counts: Sequence[int]) -> int:
    """Generated tokens a reply of windows with `counts` tokens needs, with a margin.

    Per token "i=v " (digits of i, "=", the value, a space) and per line "k: " and a line break; a
    tokenizer that splits digits spends one token per digit.
    """
    need = sum(sum(len(str(i)) + 3 for i in range(1, int(t) + 1)) + 4 for t in counts)
    return int(1.1 * need) + 8


def _answer_body(reply: str) -> tuple[str, int] | None:
    """The part of a reply after any <think> block and its offset, or None for an unfinished block."""
    start = reply.rfind("</think>")
    start = start + len("</think>") if start >= 0 else 0
    return None if "<think>" in reply[start:] else (reply[start:], start)


def _read_line(body: str, offset: int, k: int, n: int) -> tuple[np.ndarray, np.ndarray] | str:
    """(values [n] int64, spans [n, 2] of each value in the reply) of excerpt k's line, or the error.

    Items are "i=v" (i must be the item's position) or a bare "v"; separators are spaces or commas.
    """
    lead = len(body) - len(body.lstrip(" \t*"))
    core = body.strip(" \t*\r").removesuffix(".")
    if core.startswith("[") and core.endswith("]"):
        core, lead = core[1:-1], lead + 1
    vals, spans = [], []
    for j, m in enumerate(_ITEM.finditer(core), start=1):
        index, eq, value = m.group().rpartition("=")
        if eq and index != str(j):
            return f"excerpt {k}: value {j} is numbered {index[:20]!r}"
        if not (value.isascii() and value.isdigit()):
            return f"excerpt {k}: {value[:20]!r} is not a whole number"
        if int(value) > MAX_VALUE:
            return f"excerpt {k}: value {value} is outside 0-{MAX_VALUE}"
        start = offset + lead + m.start() + len(index) + len(eq)
        vals.append(int(value))
        spans.append((start, start + len(value)))
    if len(vals) != n:
        return f"excerpt {k}: expected {n} numbers, got {len(vals)}"
    return np.array(vals, dtype=np.int64), np.array(spans, dtype=np.int64).reshape(-1, 2)


def parse_reply(reply: str | None, counts: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray] | str]:
    """Per excerpt, (values, spans) of its answer line or the reason it has none.

    Answer lines are those starting with an excerpt number and a colon, in any order; other text is
    ignored. An excerpt fails when its line is missing, repeated, holds anything but integers 0-10, or has
    a count of numbers other than its token count. Lines of excerpts that do not exist are ignored.
    """
    found = _answer_body(reply) if reply else None
    if found is None:
        why = "empty reply" if not reply else "unfinished <think> block"
        return [why] * len(counts)
    body, start = found
    lines: dict[int, list[re.Match]] = {}
    for m in _LINE.finditer(body):
        lines.setdefault(int(m.group(1)), []).append(m)
    out: list[tuple[np.ndarray, np.ndarray] | str] = []
    for k, n in enumerate(counts, start=1):
        got = lines.get(k, [])
        if len(got) != 1:
            out.append(f"excerpt {k}: {'no line' if not got else 'more than one line'}")
            continue
        out.append(_read_line(got[0].group(2), start + got[0].start(2), k, int(n)))
    return out


def _p_ten(logprobs, k: int) -> float:
    """P(the number whose first token k is "1" goes on as "10"): next token "0" against a non-digit."""
    if k + 1 >= len(logprobs):
        return 0.0
    nxt = logprobs[k + 1]
    top = dict(nxt.top) | {nxt.token: nxt.logprob}
    zero = [lp for a, lp in top.items() if a[:1] == "0" and not a[1:2].isdigit()]
    stop = [lp for a, lp in top.items() if not a[:1].isdigit()]
    l0 = np.logaddexp.reduce(zero) if zero else -np.inf
    ls = np.logaddexp.reduce(stop) if stop else -np.inf
    return 0.0 if not np.isfinite(max(l0, ls)) else float(np.exp(l0 - np.logaddexp(l0, ls)))


def number_expectation(logprobs, ends: np.ndarray, text: str, s: int, e: int) -> float | None:
    """Expected value of the number at [s, e) of the generated text over its first token's alternatives.

    Alternatives count when they spell an integer 0-10 in the same place (same text before and after it in
    the token), renormalised over those. Where "10" takes two tokens ("1", "0"), an alternative "1" may be
    1 or the start of 10: when "1" was written, the next token's P("0") against P(non-digit) splits it;
    otherwise it is read as whichever of 1 and 10 lies nearer the written number. None when the number is
    split over tokens in another way.
    """
    k = int(np.searchsorted(ends, s, side="right"))  # the token holding the number's first character
    tok = logprobs[k].token
    t0 = int(ends[k]) - len(tok)
    cut = min(e, int(ends[k]))
    pre, head, post = tok[: s - t0], tok[s - t0 : cut - t0], tok[cut - t0 :]
    digits = text[s:e]
    if head != digits and not (head == "1" and digits == "10" and logprobs[k + 1].token.startswith("0")):
        return None
    top = dict(logprobs[k].top) | {tok: logprobs[k].logprob}
    vals, lps = [], []
    for alt, lp in top.items():
        mid = alt[len(pre) : len(alt) - len(post)]
        if alt.startswith(pre) and alt.endswith(post) and mid.isascii() and mid.isdigit():
            if mid == str(int(mid)) and int(mid) <= MAX_VALUE:
                vals.append(int(mid))
                lps.append(lp)
    v, p = np.array(vals, dtype=np.float64), np.exp(np.array(lps) - max(lps))  # [n_alternatives]
    if post == "":  # an alternative "1" might be continued by "0"
        if head == "1":
            q = _p_ten(logprobs, k)
        else:
            q = 0.0 if MAX_VALUE in vals else float(abs(MAX_VALUE - int(digits)) < abs(1 - int(digits)))
        v = np.where(v == 1, 1 + (MAX_VALUE - 1) * q, v)
    return float((p * v).sum() / p.sum())


def expected_values(logprobs, counts: Sequence[int], parsed: list) -> list[np.ndarray | None]:
    """Per excerpt, expected values [T] from logprobs; None where the excerpt failed or they are unusable."""
    out: list[np.ndarray | None] = [None] * len(counts)
    if not logprobs:
        return out
    text = "".join(t.token for t in logprobs)
    ends = np.cumsum([len(t.token) for t in logprobs])  # [n_generated] end offset of each token
    for i, (again, first) in enumerate(zip(parse_reply(text, counts), parsed, strict=True)):
        if isinstance(again, str) or isinstance(first, str) or not np.array_equal(again[0], first[0]):
            continue  # the tokens do not spell the parsed reply
        ev = [number_expectation(logprobs, ends, text, int(s), int(e)) for s, e in again[1]]
        if all(x is not None for x in ev):
            out[i] = np.array(ev, dtype=np.float32)
    return out


def read_reply(
    text: str | None, logprobs, counts: Sequence[int]
) -> list[tuple[np.ndarray | None, bool, str]]:
    """Per window, (predicted values [T] or None, whether they are expected values, error or "")."""
    out = []
    parsed = parse_reply(text, counts)
    for got, ev in zip(parsed, expected_values(logprobs, counts, parsed), strict=True):
        if isinstance(got, str):
            out.append((None, False, got))
        else:
            out.append((ev if ev is not None else got[0].astype(np.float32), ev is not None, ""))
    return out
