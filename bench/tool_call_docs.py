#!/usr/bin/env python3
"""Writes N tool-call documents, one JSON per line, valid against the schema of
tests/json_schema_suite/corpus/tool_call.json (branch `schema`): the input of
`streamgen-bench-grammar --docs_file` for that schema (bench/README.md).

    bench/tool_call_docs.py 100 > /tmp/tool_docs.txt
"""
import json
import random
import sys

random.seed(3)
CITIES = ["Zürich", "Paris", "東京", "New York", "São Paulo", "Reykjavík"]
QUERIES = ["weather tomorrow", "best café 😀", "json schema", "grammar engines", "x"]
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 100):
    if random.random() < 0.5:
        args = {"city": random.choice(CITIES)}
        if random.random() < 0.6:
            args["unit"] = random.choice(["celsius", "fahrenheit"])
        if random.random() < 0.6:
            args["days"] = random.randint(1, 14)
        doc = {"name": "get_weather", "arguments": args}
    else:
        args = {"query": random.choice(QUERIES)}
        if random.random() < 0.6:
            args["limit"] = random.randint(1, 50)
        if random.random() < 0.5:
            args["safe"] = random.random() < 0.5
        doc = {"name": "search", "arguments": args}
    print(json.dumps(doc, ensure_ascii=False))
