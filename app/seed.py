"""Demo data for a local trial: an accepted institution, a branch with premises on loopback,
users of every role, and a demo product with a published script. Refused in production."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from models.org import Branch, GeofenceKind, Institution, InstitutionKind, Premises
from models.people import Agent, Role, User
from models.sales import Channel, Product, ProductType, ScriptStatus, ScriptVersion
from scripts_library.canonical import content_hash
from scripts_library.catalogue import load_library
from scripts_library.lint import lint
from scripts_library.model import ScriptDocument
from security import audit
from security.audit import Actor
from security.passwords import hash_password
from workflow.script_versions import GRADE_RANK, findings_json

# Demo credentials for a local trial only; `seed-demo` refuses to run with the prod profile.
DEMO_USERS: list[tuple[str, str, Role, str]] = [
    ("agent01", "demo-agent-01", Role.AGENT, "王小明"),
    ("agent02", "demo-agent-02", Role.AGENT, "李晓红"),
    ("po01", "demo-owner-01", Role.PRODUCT_OWNER, "赵产品"),
    ("po02", "demo-owner-02", Role.PRODUCT_OWNER, "钱产品"),
    ("qa01", "demo-qa-0001", Role.QA_INSPECTOR, "孙质检"),
    # A second inspector: a critical finding's dismissal needs another inspector's approval.
    ("qa02", "demo-qa-0002", Role.QA_INSPECTOR, "陈质检"),
    ("sup01", "demo-super-01", Role.SUPERVISOR, "周主管"),
    ("admin01", "demo-admin-01", Role.ADMIN, "吴管理"),
    ("auditor01", "demo-audit-01", Role.AUDITOR, "郑审计"),
    ("engine01", "demo-engine-01", Role.SYSTEM, "核验引擎"),
]

# The demo products are the sample library's (scripts_library/library): one published version
# each, so a fresh install can record straight away.
DEMO_PRODUCT_CODE = "YA-ZSS-001"
INSURER_CODE = "DEMO-LIFE"


def _term_years(document: ScriptDocument) -> int:
    """Whole-life and to-age terms count as long terms for the R-01 scope check."""
    term = document.product.term_years
    if term is not None:
        return term
    to_age = getattr(document.product.term, "to_age", None)
    return int(to_age) if to_age else 100


async def _seed_products(conn: BaseDBAsyncClient, insurer: Institution) -> list[str]:
    codes = []
    for path, document in load_library().items():
        info = document.product
        product, _ = await Product.get_or_create(
            code=info.code, defaults={
                "insurer_id": insurer.id, "name": info.name,
                "product_type": ProductType(info.type.value),
                "term_years": _term_years(document), "grade": GRADE_RANK[info.grade.value],
                "channel": Channel(info.channel.value),
                "cooling_off_days": info.cooling_off_days,
            }, using_db=conn,
        )
        codes.append(product.code)
        if await ScriptVersion.filter(product_id=product.id).using_db(conn).exists():
            continue
        source = path.read_text(encoding="utf-8")
        await ScriptVersion.create(
            product_id=product.id, version=document.script.version,
            status=ScriptStatus.PUBLISHED, source_yaml=source,
            document=document.model_dump(mode="json"), content_hash=content_hash(document),
            lint=findings_json(lint(document)), published_at=datetime.now(UTC),
            using_db=conn,
        )
    return codes


@dataclass(frozen=True)
class DemoSummary:
    institution_id: int
    product_codes: list[str]
    users: list[tuple[str, str, str]]


async def seed_demo() -> DemoSummary:
    """Idempotent: running it twice changes nothing."""
    async with in_transaction() as conn:
        bank, created = await Institution.get_or_create(
            code="DEMO-BANK", defaults={
                "name": "甬江银行", "full_name": "甬江银行股份有限公司宁波海曙支行",
                "kind": InstitutionKind.BANK, "accepted": True,
            }, using_db=conn,
        )
        insurer, _ = await Institution.get_or_create(
            code=INSURER_CODE, defaults={
                "name": "甬安人寿", "full_name": "甬安人寿保险股份有限公司",
                "kind": InstitutionKind.INSURER, "accepted": True,
            }, using_db=conn,
        )
        branch, _ = await Branch.get_or_create(
            institution_id=bank.id, code="NB001", defaults={"name": "宁波海曙支行"},
            using_db=conn,
        )
        await Premises.get_or_create(
            branch_id=branch.id, name="海曙支行营业厅", defaults={
                "address": "宁波市海曙区示例路1号", "geofence_kind": GeofenceKind.CIRCLE,
                "center_lat": 29.8683, "center_lng": 121.5440, "radius_m": 300.0,
                "ip_cidrs": ["127.0.0.0/8", "::1/128"],
            }, using_db=conn,
        )
        product_codes = await _seed_products(conn, insurer)
        users = []
        for username, password, role, name in DEMO_USERS:
            user = await User.get_or_none(username=username, using_db=conn)
            if user is None:
                user = await User.create(
                    username=username, password_hash=hash_password(password), display_name=name,
                    role=role, institution_id=bank.id,
                    branch_id=branch.id if role in (Role.AGENT, Role.SUPERVISOR) else None,
                    using_db=conn,
                )
                if role == Role.AGENT:
                    await Agent.create(
                        user_id=user.id, licence_no=f"0200{user.id:04d}33020000{user.id:04d}",
                        licence_expires=date.today() + timedelta(days=730),
                        training_expires=date.today() + timedelta(days=365), grade=3,
                        using_db=conn,
                    )
            users.append((username, password, role.value))
        if created:
            await audit.record(conn, Actor.system("seed-demo"), "demo.seeded",
                               object_type="institution", object_id=str(bank.id))
    return DemoSummary(bank.id, product_codes, users)
