#!/usr/bin/env python3
"""Writes tests/server/data/json_schema_cases.json: the simple cases of the JSON Schema test
suite (objects, arrays, enums, nesting, required properties, numbers, escaped names) that the
structured-output tests sample under. The suite (github.com/json-schema-org/JSON-Schema-Test-
Suite, MIT licence) ships inside the source distribution of `jsonschema` on PyPI, which this
script downloads with pip; only the chosen schemas are kept, each with its file and
description in the suite.

    tools/make_schema_cases.py   # needs pip and network access to PyPI
"""

import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "4.26.0"
DRAFT = "draft2020-12"
# (file of the suite, description of a group): one or more per kind of constraint.
CHOSEN = [
    ("type", "object type matches objects"),
    ("type", "array type matches arrays"),
    ("type", "multiple types can be specified in an array"),
    ("properties", "object properties validation"),
    ("properties", "properties with escaped characters"),
    ("required", "required validation"),
    ("enum", "heterogeneous enum validation"),
    ("enum", "enums in properties"),
    ("items", "nested items"),
    ("items", "prefixItems validation adjusts the starting index for items"),
    ("maximum", "maximum validation with unsigned integer"),
    ("minimum", "minimum validation with signed integer"),
    ("anyOf", "anyOf complex types"),
    ("ref", "nested refs"),
    ("const", "const with object"),
]


def main():
    out = Path(__file__).resolve().parents[1] / "tests" / "server" / "data" / "json_schema_cases.json"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--no-binary", ":all:", f"jsonschema=={VERSION}", "-d", tmp], check=True)
        with tarfile.open(next(Path(tmp).glob("jsonschema-*.tar.gz"))) as sdist:
            def suite_file(name):
                member = f"jsonschema-{VERSION}/json/tests/{DRAFT}/{name}.json"
                return json.load(sdist.extractfile(member))
            cases = []
            for name, description in CHOSEN:
                group = next(g for g in suite_file(name) if g["description"] == description)
                cases.append({"suite_file": f"{DRAFT}/{name}.json", "description": description,
                              "schema": group["schema"]})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "source": f"JSON-Schema-Test-Suite (MIT), from the sdist of jsonschema {VERSION} on PyPI; "
                  "written by tools/make_schema_cases.py",
        "cases": cases}, indent=1) + "\n")
    print(f"wrote {len(cases)} schemas to {out}")


if __name__ == "__main__":
    main()
