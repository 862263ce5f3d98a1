"""The verifiable tasks of the post-training loop: addition of non-negative integers, written as
"a+b=" and answered with the digits of a + b, and reversal of a string of digits, written as
"reverse 4702 =" and answered "2074"; each answer then ends with the end-of-sequence token.

Chosen for the 22.6M demo model (models/demo/tandem-demo-moe): its tokenizer writes every digit,
'+' and '=' as one token, so an answer is a handful of tokens; a solver gives exact
demonstrations and a rule gives an exact reward; and the base model, trained on the Bible and
dictionaries, does not know them (its accuracy starts at zero). Reversal is the default of
train.py: the model learns to generalise it to held-out strings in minutes, where addition
needs far more steps. A fixed hash of each problem puts about one in five into the held-out
set, so no training prompt is ever evaluated.

Pure Python: the tokenizer is passed in as `encode(text) -> ids` (Engine.tokenize, or
transformers' tokenizer), so tests run without the engine or torch.
"""

import hashlib
import re
from dataclasses import dataclass

HELD_OUT_PERCENT = 20


@dataclass(frozen=True)
class Problem:
    a: int
    b: int

    @property
    def prompt(self):
        return f"{self.a}+{self.b}="

    @property
    def answer(self):
        """The solver: the demonstration's text."""
        return str(self.a + self.b)

    @property
    def held_out(self):
        digest = hashlib.sha1(f"{self.a}+{self.b}".encode()).digest()
        return int.from_bytes(digest[:4], "little") % 100 < HELD_OUT_PERCENT


@dataclass(frozen=True)
class Reversal:
    """Write a string of digits backwards: "reverse 4702 =" -> "2074"."""
    digits: str

    @property
    def prompt(self):
        return f"reverse {self.digits} ="

    @property
    def answer(self):
        return self.digits[::-1]

    @property
    def held_out(self):
        digest = hashlib.sha1(f"reverse {self.digits}".encode()).digest()
        return int.from_bytes(digest[:4], "little") % 100 < HELD_OUT_PERCENT


def all_reversals(length):
    """Every string of `length` digits, leading zeros included."""
    return [Reversal(f"{i:0{length}d}") for i in range(10**length)]


def all_problems(max_digits):
    """Every problem with both operands below 10**max_digits, in a fixed order."""
    top = 10**max_digits
    return [Problem(a, b) for a in range(top) for b in range(top)]


def split(max_digits, kind="add"):
    """(train, held_out): disjoint lists of problems, the same for the same arguments. kind:
    "add" (operands below 10**max_digits) or "reverse" (strings of max_digits digits)."""
    problems = all_problems(max_digits) if kind == "add" else all_reversals(max_digits)
    return ([p for p in problems if not p.held_out], [p for p in problems if p.held_out])


# An answer: optional spaces, the digits, then nothing but spaces (the end of sequence is the
# stop token, which the engine leaves out of the text).
ANSWER = re.compile(r"\s*(\d+)\s*")


def reward(problem, completion_text):
    """1.0 if the completion is exactly the solver's digits (spaces around allowed; so a sum
    with a leading zero is wrong), else 0.0."""
    match = ANSWER.fullmatch(completion_text)
    return 1.0 if match and match.group(1) == problem.answer else 0.0


def demonstration_ids(problem, encode, eos_id):
    """The solver's answer as token ids, ending with the end-of-sequence token."""
    return list(encode(problem.answer)) + [eos_id]


def prompt_ids(problem, encode):
    return list(encode(problem.prompt))
