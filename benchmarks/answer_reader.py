"""What reading Helix's answer costs: AnswerReader per content delta, for long answers.

The reader sits between Helix's stream and the chat (decorations become statuses, failure texts
are held back). Helix sends one delta per word, about every 10 ms, so the reader must cost far
less than that and stay linear in the answer's length, also when it holds back text that may be
a failure (an answer that starts with ``Fehler:`` or has a ``**Fehler:**`` paragraph).

    python benchmarks/answer_reader.py                # 20,000 words per answer
    python benchmarks/answer_reader.py --words 2000   # a quick run
"""

from __future__ import annotations

import argparse
import time

from helix_pipeline.helix_answer import AnswerReader
from helix_pipeline.testing import FIRST_CHUNK, SEPARATOR

STEP = "<!-- STEP: what -->"


def answers(words: int) -> dict[str, list[str]]:
    """Helix streams, delta by delta: a plain answer and the shapes that make the reader wait."""
    body = [f"wort{n} " for n in range(words)]
    return {
        "plain answer": [FIRST_CHUNK, ".", SEPARATOR, *body, f"\n\n{STEP}"],
        "a '**Fehler:**' paragraph early": [FIRST_CHUNK, SEPARATOR, "Intro\n\n**Fehler:** ", *body],
        "starts with 'Fehler: '": ["Fehler: ", *body],
        "a paragraph per word": [FIRST_CHUNK, SEPARATOR, *(w + "\n\n" for w in body)],
    }


def run(words: int) -> None:
    print(
        f"AnswerReader, {words:,} words an answer (command: python benchmarks/answer_reader.py"
        f" --words {words})"
    )
    print(f"{'answer':<34} {'deltas':>8} {'total ms':>9} {'us/delta':>9}")
    for name, deltas in answers(words).items():
        started = time.perf_counter()
        reader = AnswerReader()
        for delta in deltas:
            reader.feed(delta)
        reader.finish()
        elapsed = time.perf_counter() - started
        assert reader.failure is None, name
        print(
            f"{name:<34} {len(deltas):>8,} {elapsed * 1000:>9.0f} "
            f"{elapsed / len(deltas) * 1e6:>9.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=20_000)
    run(parser.parse_args().words)


if __name__ == "__main__":
    main()
