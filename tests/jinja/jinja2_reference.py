#!/usr/bin/python3
"""Renders Jinja templates with Jinja2 the way transformers' apply_chat_template
sets it up (utils/chat_template_utils.py, _compile_jinja_template):
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) with the
loopcontrols extension, a tojson filter calling json.dumps with
ensure_ascii=False, raise_exception and strftime_now.

Input (stdin): {"cases": [{"template": "...", "context": {...}}, ...]}
Output (stdout): {"results": [{"text": ...} or {"error": ...}, ...]}
"""
import json
import sys
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def strftime_now(format):
    return datetime.now().strftime(format)


def environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def render(env, case):
    try:
        template = env.from_string(case["template"])
        return {"text": template.render(**case.get("context", {}))}
    except Exception as error:  # every failure is a result to compare, not a crash
        return {"error": f"{type(error).__name__}: {error}"}


def main():
    request = json.load(sys.stdin)
    env = environment()
    json.dump({"results": [render(env, case) for case in request["cases"]]}, sys.stdout,
              ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
