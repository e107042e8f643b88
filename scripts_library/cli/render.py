"""`render FILE --age N --values JSON`: preview the steps one session would play (R-21)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scripts_library.loader import ScriptLoadError, load_script
from scripts_library.render import RenderContext, RenderError, render

NAME = "render"
HELP = "按客户年龄和订单数据预览一次双录会播放的话术"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="FILE", help="话术 YAML 文件")
    parser.add_argument("--age", type=int, required=True, help="投保人年龄")
    parser.add_argument("--values", required=True, help="订单变量：JSON 文本或 JSON 文件路径")
    parser.add_argument("--insured-differs", action="store_true", help="投保人与被保险人不是同一人")


def run(args: argparse.Namespace) -> int:
    raw = args.values
    if not raw.lstrip().startswith("{") and Path(raw).is_file():
        raw = Path(raw).read_text(encoding="utf-8")
    try:
        values = json.loads(raw)
    except json.JSONDecodeError as error:
        print(f"--values 不是合法的 JSON：{error}")
        return 2
    try:
        document = load_script(args.path)
        rendered = render(
            document,
            RenderContext(
                customer_age=args.age,
                values=values,
                policyholder_is_insured=not args.insured_differs,
            ),
        )
    except ScriptLoadError as error:
        print(error)
        return 2
    except RenderError as error:
        print(error.message)
        return 1
    for position, step in enumerate(rendered.steps, start=1):
        print(
            f"[{position:02d}] {step.id} {step.title}（{step.speaker.value} / {step.answer.value}）"
        )
        print(f"     {step.text}")
        if step.copy_text:
            print(f"     抄录：{step.copy_text}")
    print(
        f"共 {len(rendered.steps)} 个步骤；话术 {rendered.script_code} v{rendered.script_version}，"
        f"{rendered.content_hash}"
    )
    return 0
