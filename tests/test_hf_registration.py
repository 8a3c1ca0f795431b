"""``import linearlab`` stays light yet makes linearlab's model types known to the Auto classes."""

import subprocess
import sys


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_auto_classes_know_linearlab_types_after_import_linearlab():
    code = (
        "import sys, linearlab\n"
        "print('transformers' in sys.modules)\n"  # importing linearlab stays light
        "from transformers import AutoConfig, AutoModelForCausalLM\n"
        "for t in ('linearlab', 'linearlab_linearized_llama', 'linearlab_linearized_qwen2'):\n"
        "    cfg = AutoConfig.for_model(t)\n"
        "    print(t, type(cfg).__name__, AutoModelForCausalLM._model_mapping[type(cfg)].__name__)\n"
    )
    lines = _run(code).splitlines()
    assert lines == [
        "False",
        "linearlab LinearLabConfig LinearLabForCausalLM",
        "linearlab_linearized_llama LinearizedLlamaConfig LinearizedLlamaForCausalLM",
        "linearlab_linearized_qwen2 LinearizedQwen2Config LinearizedQwen2ForCausalLM",
    ]


def test_registration_also_works_when_transformers_came_first():
    code = (
        "import transformers\n"
        "import linearlab\n"
        "from transformers import AutoConfig\n"
        "print(type(AutoConfig.for_model('linearlab_linearized_mistral')).__name__)\n"
    )
    assert _run(code).strip() == "LinearizedMistralConfig"


def test_any_linearlab_module_may_be_the_first_to_import_transformers():
    for first in ("linearlab.convert.hf_classes", "linearlab.models.hf", "linearlab.convert.hf_attention"):
        code = (
            f"import {first}\n"
            "from transformers import AutoConfig, AutoModelForCausalLM\n"
            "for t in ('linearlab', 'linearlab_linearized_llama', 'linearlab_linearized_linearlab'):\n"
            "    print(AutoModelForCausalLM._model_mapping[type(AutoConfig.for_model(t))].__name__)\n"
        )
        assert _run(code).split() == [
            "LinearLabForCausalLM",
            "LinearizedLlamaForCausalLM",
            "LinearizedLinearLabForCausalLM",
        ], first
