"""vLLM's offline generation at the same workload, for numbers comparable with the paper.

archscale writes a Hugging Face Llama ``config.json`` of the architecture
(:mod:`.hf_config`) and runs ``vllm.LLM`` on it with dummy weights (``load_format="dummy"``),
no tokenizer, token-id prompts, greedy sampling and ``ignore_eos`` with
``min_tokens = max_tokens = output_len``, so every request generates exactly ``output_len``
tokens as in the megatron engine.

vLLM does not expose prefill and decode separately in its offline API: the prefill latency is
timed as a generation of one token for the same batch, and decode is the rest of a full
generation (``decode_s = total_s - prefill_s``).

vLLM is an optional dependency of cluster environments (``pip install vllm``); it needs a GPU.
"""

from __future__ import annotations

import tempfile
import time

import torch

from ..arch import Architecture
from .engine import Generation
from .hf_config import write_llama_config


def _import_vllm():
    try:
        import vllm
    except ImportError as exc:
        raise RuntimeError(
            f"throughput.engine is 'vllm' but vLLM is not installed ({exc}); install it in the cluster "
            "environment (pip install vllm) or set throughput.engine: megatron"
        ) from None
    return vllm


class VllmDecoder:
    name = "vllm"

    def __init__(self, arch: Architecture, max_batch: int, max_seq: int, seed: int, *,
                 dtype: str = "bfloat16", gpu_memory_utilization: float = 0.9):
        vllm = _import_vllm()
        if not torch.cuda.is_available():
            raise RuntimeError("throughput.engine vllm needs a GPU; use throughput.engine: megatron on CPU")
        self._dir = tempfile.TemporaryDirectory(prefix=f"archscale-{arch.arch_id}-")
        write_llama_config(arch, self._dir.name, max_position_embeddings=max_seq, dtype=dtype)
        self.llm = vllm.LLM(
            model=self._dir.name,
            load_format="dummy",
            skip_tokenizer_init=True,
            dtype=dtype,
            max_model_len=max_seq,
            max_num_seqs=max_batch,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
        )
        self._vllm = vllm

    def _sampling(self, n: int):
        return self._vllm.SamplingParams(
            temperature=0.0, max_tokens=n, min_tokens=n, ignore_eos=True, detokenize=False
        )

    def _run(self, prompts: torch.Tensor, n: int):
        from vllm.inputs import TokensPrompt

        batch = [TokensPrompt(prompt_token_ids=row.tolist()) for row in prompts]
        torch.cuda.synchronize()
        t = time.perf_counter()
        outputs = self.llm.generate(batch, self._sampling(n), use_tqdm=False)
        torch.cuda.synchronize()
        return outputs, time.perf_counter() - t

    def generate(self, prompts: torch.Tensor, output_len: int) -> Generation:
        _, prefill_s = self._run(prompts, 1)
        outputs, total_s = self._run(prompts, output_len)
        tokens = torch.tensor([list(o.outputs[0].token_ids) for o in outputs])
        if tokens.shape[1] != output_len:
            raise RuntimeError(f"vLLM generated {tokens.shape[1]} tokens per request, expected {output_len}")
        return Generation(tokens, prefill_s, max(total_s - prefill_s, 0.0))
