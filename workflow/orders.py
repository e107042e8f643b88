"""Orders (applications) and their customers, whose personal data is encrypted (R-52)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from tortoise.transactions import in_transaction

from models.people import Agent, Customer
from models.sales import Order, Product
from rules import idnumber
from security import audit
from workflow.core import WorkflowDeps
from workflow.errors import Conflict, Forbidden, InvalidInput, NotFound
from workflow.principals import StaffPrincipal


@dataclass(frozen=True)
class NewOrder:
    application_no: str
    product_code: str
    customer_name: str
    customer_id_number: str
    customer_phone: str | None
    premium: Decimal
    payment_years: int
    payment_mode: str = "年交"
    sum_insured: Decimal | None = None
    insured_name: str | None = None
    extra_values: dict[str, str] = field(default_factory=dict)


async def create_order(deps: WorkflowDeps, principal: StaffPrincipal, data: NewOrder) -> Order:
    if principal.agent_id is None or principal.branch_id is None:
        raise Forbidden("not_an_agent", "只有销售人员可以创建投保单")
    id_number = data.customer_id_number.strip().upper()
    if not idnumber.is_valid(id_number, deps.clock().date()):
        raise InvalidInput("id_number_invalid", "客户身份证号码无效，请核对后重新输入")
    product = await Product.get_or_none(code=data.product_code, active=True)
    if product is None:
        raise NotFound("product_not_found", "找不到该产品或产品已停售")
    if await Order.exists(application_no=data.application_no):
        raise Conflict("application_exists", "该投保单号已存在")
    agent = await Agent.get(id=principal.agent_id)
    index = deps.cipher.index(id_number)
    async with in_transaction() as conn:
        customer = await Customer.get_or_none(
            institution_id=principal.institution_id, id_number_index=index, using_db=conn
        )
        if customer is None:
            customer = await Customer.create(
                institution_id=principal.institution_id,
                name_enc=deps.cipher.encrypt(data.customer_name, "customer.name"),
                id_number_enc=deps.cipher.encrypt(id_number, "customer.id_number"),
                id_number_index=index,
                phone_enc=(
                    deps.cipher.encrypt(data.customer_phone, "customer.phone")
                    if data.customer_phone else None
                ),
                using_db=conn,
            )
        order = await Order.create(
            application_no=data.application_no, institution_id=principal.institution_id,
            branch_id=principal.branch_id, agent_id=agent.id, customer_id=customer.id,
            product_id=product.id, premium=data.premium, payment_years=data.payment_years,
            payment_mode=data.payment_mode, sum_insured=data.sum_insured,
            extra_values=data.extra_values,
            insured_name_enc=(
                deps.cipher.encrypt(data.insured_name, "order.insured_name")
                if data.insured_name else None
            ),
            using_db=conn,
        )
        await audit.record(
            conn, principal.actor, "order.create", object_type="order",
            object_id=str(order.id), details={"application_no": data.application_no},
        )
    return order


@dataclass(frozen=True)
class CustomerData:
    name: str
    id_number: str
    phone: str | None
    insured_name: str | None = None  # None: the policyholder is the insured


def decrypt_customer(
    deps: WorkflowDeps, customer: Customer, order: Order | None = None
) -> CustomerData:
    insured = order.insured_name_enc if order is not None else None
    return CustomerData(
        name=deps.cipher.decrypt(customer.name_enc, "customer.name"),
        id_number=deps.cipher.decrypt(customer.id_number_enc, "customer.id_number"),
        phone=(
            deps.cipher.decrypt(customer.phone_enc, "customer.phone")
            if customer.phone_enc else None
        ),
        insured_name=deps.cipher.decrypt(insured, "order.insured_name") if insured else None,
    )
