"""`scripts publish FILE --author U --approver V`: put a script version into the database's
library through the whole review path (draft, submit, approve by a second person, publish) and
pre-render its speech. Every step is audited as the named users; nothing is skipped."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

NAME = "publish"
HELP = "发布话术版本（起草→提交→他人审核→发布），并预生成语音"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="话术 YAML 文件")
    parser.add_argument("--author", required=True, help="编写人用户名（需有 edit_script 权限）")
    parser.add_argument("--approver", required=True,
                        help="审核发布人用户名（需有 publish_script 权限，且不能是编写人）")


async def _publish(args: argparse.Namespace) -> int:
    # Imported here: `scripts validate` must work without a database or the app's settings.
    from app.factory import document_folders, speech_settings
    from infra.config import load_config
    from infra.database import open_database
    from media.tts.prerender import prerender
    from models.people import Agent, User
    from scripts_library.documents import use_folders
    from scripts_library.render import static_speech_steps
    from workflow import script_versions as versions
    from workflow.errors import WorkflowError
    from workflow.principals import StaffPrincipal

    config = load_config()
    use_folders(document_folders(config))
    async with open_database(config.database_url):
        principals = {}
        for role in ("author", "approver"):
            user = await User.get_or_none(username=getattr(args, role), active=True)
            if user is None:
                print(f"用户 {getattr(args, role)} 不存在或已停用")
                return 2
            agent = await Agent.get_or_none(user_id=user.id)
            principals[role] = StaffPrincipal(
                user.id, user.username, user.display_name, user.role, user.institution_id,
                user.branch_id, agent.id if agent else None, ip="cli",
            )
        try:
            version = await versions.create_draft(
                principals["author"], args.file.read_text(encoding="utf-8"), str(args.file))
            await versions.submit(principals["author"], version.id)
            await versions.approve(principals["approver"], version.id)
            version = await versions.publish(principals["approver"], version.id)
        except WorkflowError as exc:
            print(f"未能发布：{exc.message}")
            for finding in exc.extra.get("findings", []) + exc.extra.get("problems", []):
                print(f"  - {finding.get('message')}（{finding.get('line') or ''}）")
            return 1
        speech = speech_settings(config)
        report = await prerender(static_speech_steps(versions.document_of(version)),
                                 list(speech.engines), speech.cache_dir)
        print(f"已发布：版本 {version.version}，{version.content_hash}；"
              f"预生成语音 {len(report.steps)} 段（缓存命中 {report.cache_hits}）")
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_publish(args))
