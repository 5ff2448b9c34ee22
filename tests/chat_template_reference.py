#!/usr/bin/python3
"""Reference renderings of chat templates with Jinja2, as Hugging Face's
apply_chat_template evaluates them (ImmutableSandboxedEnvironment, trim_blocks,
lstrip_blocks, raise_exception, add_generation_prompt=True).

Input (stdin): {"cases": [{"family": "llama2", "messages": [{"role", "content"}]}]}
Output (stdout): {"templates": {family: jinja}, "results": [{"text": ...} or {"error": ...}]}

The templates are the chat_template strings of the models' tokenizer_config.json
(Llama-2-7b-chat-hf; Mistral-7B-Instruct-v0.1; ChatML as in OpenHermes-2.5 /
Qwen-style models), written down from the published files (no network here).
"""
import json
import sys

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATES = {
    "llama2": (
        "{% if messages[0]['role'] == 'system' %}"
        "{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
        "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
        "{% for message in loop_messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
        "{% endif %}"
        "{% if loop.index0 == 0 and system_message != false %}"
        "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
        "{% else %}{% set content = message['content'] %}{% endif %}"
        "{% if message['role'] == 'user' %}"
        "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}"
        "{{ ' '  + content.strip() + ' ' + eos_token }}"
        "{% endif %}{% endfor %}"
    ),
    "mistral": (
        "{{ bos_token }}{% for message in messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
        "{% endif %}"
        "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}"
        "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
        "{% endif %}{% endfor %}"
    ),
    "chatml": (
        "{% for message in messages %}"
        "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
}


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def main():
    request = json.load(sys.stdin)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    results = []
    for case in request["cases"]:
        template = env.from_string(TEMPLATES[case["family"]])
        try:
            text = template.render(messages=case["messages"], bos_token="<s>",
                                   eos_token="</s>", add_generation_prompt=True)
            results.append({"text": text})
        except jinja2.exceptions.TemplateError as error:
            results.append({"error": str(error)})
    json.dump({"templates": TEMPLATES, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
