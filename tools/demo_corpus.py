#!/usr/bin/env python3
"""Extract the demo corpus's plain text from installed Debian packages (run by
tools/make_demo_corpus.sh, which installs them).

Sources, one document each:
  kjv     bible-kjv-text    a chapter of the King James Version (one verse a line, no numbers)
  gcide   dict-gcide        an entry of the GNU Collaborative International Dictionary
  devil   dict-devil        an entry of Bierce's The Devil's Dictionary
  foldoc  dict-foldoc       an entry of the Free On-line Dictionary of Computing
  jargon  jargon-text       an entry of the Jargon File 4.4.7
  chat    (derived)         a ChatML question/answer made from a training-split entry above, so
                            that the model answers in the chat format (and stops with <|im_end|>)

A document goes to valid.jsonl when the SHA-1 of "source:id" is 0 modulo 50 (about 2%), so the
split does not depend on the order of the files; chat documents are made from training entries
only. Output is byte-identical for the same package versions.
"""

import argparse
import base64
import gzip
import hashlib
import json
import re
from pathlib import Path

DICTD = Path("/usr/share/dictd")
JARGON = Path("/usr/share/doc/jargon-text/jargon.txt.gz")
VALID_MODULUS = 50

# Typographic characters folded to ASCII: fewer rare byte sequences for an 8k vocabulary.
ASCII_FOLD = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'", "—": " -- ", "–": "-",
                            "·": "-", "…": "..."})

# ChatML, exactly as the chat template in tokenizer_config.json renders one exchange.
CHAT = "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n{a}<|im_end|>\n"
DICT_QUESTIONS = ['What does "{w}" mean?', 'Define "{w}".', 'What is the meaning of "{w}"?',
                  'Explain the word "{w}".']
JARGON_QUESTIONS = ['What does "{w}" mean in hacker slang?', 'What is "{w}"?']
KJV_QUESTIONS = ["Recite {w} from the King James Bible.", "What does {w} say?"]


def digest(key):
    return int(hashlib.sha1(key.encode()).hexdigest(), 16)


def unwrap(text):
    """Joins the hard-wrapped lines of each blank-line-separated paragraph."""
    paragraphs = []
    for para in re.split(r"\n\s*\n", text.translate(ASCII_FOLD)):
        line = " ".join(part.strip() for part in para.splitlines() if part.strip())
        line = re.sub(r"\s+", " ", line).strip()
        if line:
            paragraphs.append(line)
    return "\n\n".join(paragraphs)


def b64_number(s):
    """A dictd index offset or length: big-endian base64 digits."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    value = 0
    for ch in s:
        value = value * 64 + alphabet.index(ch)
    return value


def dict_entries(name):
    """(headword, raw entry text) of a dictd database, once per entry, in file order."""
    data = gzip.open(DICTD / f"{name}.dict.dz").read()  # dictzip is gzip-compatible
    first_headword = {}
    for line in (DICTD / f"{name}.index").read_text(encoding="utf-8").splitlines():
        headword, offset, length = line.split("\t")[:3]
        if headword.startswith("00-database") or headword.startswith("00database"):
            continue
        first_headword.setdefault((b64_number(offset), b64_number(length)), headword)
    for (offset, length), headword in sorted(first_headword.items()):
        yield headword, data[offset:offset + length].decode("utf-8", errors="replace")


def clean_gcide(text):
    text = re.sub(r"(?m)^\s*\[[^\]\n]*\]\s*$", "", text)  # "[1913 Webster]" source markers
    text = re.sub(r"\\[^\\\n]*\\", "", text)  # pronunciations: \Di*chot"o*my\
    text = text.replace("{", "").replace("}", "")  # cross-reference braces
    text = unwrap(text)
    return re.sub(r" +([,.;])", r"\1", text)


def clean_foldoc(text):
    text = re.sub(r"(?m)^\s*\(\d{4}-\d{2}-\d{2}\)\s*$", "", text)  # revision dates
    return unwrap(text.replace("{", "").replace("}", ""))


def clean_devil(text):
    return unwrap(text)


def kjv_chapters(path):
    """("Genesis 1", text) per chapter of `bible -l0` output."""
    book_chapter, verses = None, []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        verse = re.match(r"^\s+\d+ (.*)$", line)
        if verse:
            verses.append(verse.group(1).strip())
            continue
        if book_chapter and verses:
            yield book_chapter, "\n".join(verses)
        book_chapter, verses = line.strip(), []
    if book_chapter and verses:
        yield book_chapter, "\n".join(verses)


def jargon_entries():
    """(headword, text) per glossary entry; the front and back matter as one document each."""
    text = gzip.open(JARGON).read().decode("utf-8")
    headword, lines = "front matter", []
    for line in text.splitlines():
        header = re.match(r"^   :(.+?):(.*)$", line)
        if header:
            yield headword, unwrap("\n".join(lines))
            headword, lines = header.group(1), [header.group(1) + ":" + header.group(2)]
        else:
            lines.append(line)
    yield headword, unwrap("\n".join(lines))


def documents(kjv_path):
    """(source, id, headword, text) of every plain document, in a fixed order."""
    for chapter, text in kjv_chapters(kjv_path):
        yield "kjv", chapter, chapter, chapter + "\n\n" + text
    for name, clean in (("gcide", clean_gcide), ("devil", clean_devil),
                        ("foldoc", clean_foldoc)):
        for index, (headword, raw) in enumerate(dict_entries(name)):
            text = clean(raw)
            if len(text) >= 20:
                yield name, f"{index}:{headword}", headword, text
    for index, (headword, text) in enumerate(jargon_entries()):
        if len(text) >= 20:
            yield "jargon", f"{index}:{headword}", headword, text


def chat_document(source, doc_id, headword, text):
    """A ChatML exchange built from a training entry, or None for the entries not used: each
    Devil's Dictionary entry, half the Jargon File, a quarter of the Bible chapters and of
    FOLDOC, an eighth of GCIDE."""
    h = digest("chat:" + source + ":" + doc_id)
    keep = {"kjv": 4, "devil": 1, "jargon": 2, "foldoc": 4, "gcide": 8}[source]
    if h % keep:
        return None
    questions = {"kjv": KJV_QUESTIONS, "jargon": JARGON_QUESTIONS}.get(source, DICT_QUESTIONS)
    question = questions[(h // keep) % len(questions)].format(w=headword.strip())
    answer = text
    if source == "kjv":  # the answer is the verses, not the "Genesis 1" heading
        answer = text.split("\n\n", 1)[1]
    return CHAT.format(q=question, a=answer)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kjv", required=True, help="output of `bible -l0 Gen1:1-Rev22:21`")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    counts = {}
    with open(out / "train.jsonl", "w", encoding="utf-8") as train, \
            open(out / "valid.jsonl", "w", encoding="utf-8") as valid:
        for source, doc_id, headword, text in documents(args.kjv):
            is_valid = digest(source + ":" + doc_id) % VALID_MODULUS == 0
            split = "valid" if is_valid else "train"
            docs = [(source, doc_id, text)]
            if not is_valid:
                chat = chat_document(source, doc_id, headword, text)
                if chat:
                    docs.append(("chat", source + ":" + doc_id, chat))
            for src, did, body in docs:
                line = json.dumps({"source": src, "id": did, "text": body}, ensure_ascii=False)
                (valid if is_valid else train).write(line + "\n")
                key = (split, src)
                n, size = counts.get(key, (0, 0))
                counts[key] = (n + 1, size + len(body.encode()))
    for (split, src), (n, size) in sorted(counts.items()):
        print(f"{split:5} {src:7} {n:7} documents {size / 1e6:7.2f} MB")


if __name__ == "__main__":
    main()
