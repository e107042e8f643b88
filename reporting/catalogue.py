"""The requirements catalogue (R-xx) the acceptance evidence pack maps to code and tests (R-02),
and the articles of the Ningbo rules each requirement implements.

Ids and short titles follow the project's requirements catalogue; the full texts live there.
"""

from __future__ import annotations

from dataclasses import dataclass

REQUIREMENTS: dict[str, tuple[str, str]] = {
    "R-01": ("Scope", "适用范围：一年期以上人身保险、线上渠道"),
    "R-02": ("Acceptance gate", "验收通过后方可开展，验收材料可导出"),
    "R-03": ("Agent gates", "销售人员执业证、培训、分级及执业场所核验"),
    "R-10": ("Consent first", "录制前取得客户同意及个人信息授权"),
    "R-11": ("Opening prompt", "开场提示语"),
    "R-12": ("Identity", "身份核验：证件识别、人脸比对、活体检测"),
    "R-13": ("Presence during the call", "通话中客户在场、无他人、同一人"),
    "R-20": ("Private, secure call", "音视频通话加密、链接一次性"),
    "R-21": ("Script content", "话术必备内容及顺序"),
    "R-22": ("No forbidden phrasing", "禁止性表述"),
    "R-23": ("TTS", "语音播报内容与发布版本一致且完整播放"),
    "R-24": ("Clear affirmative answer", "客户明确肯定答复"),
    "R-25": ("Documents and signature", "文件展示、风险语句抄录及签名"),
    "R-26": ("One policy, one session", "一单一录"),
    "R-30": ("Complete and continuous", "录像完整连续、断点续录"),
    "R-31": ("Sealed", "封存与防篡改校验"),
    "R-32": ("Quality", "音视频质量"),
    "R-40": ("Quality inspection", "质检：自动检查、抽检、整改"),
    "R-41": ("Replay", "回放、查询及访问留痕"),
    "R-42": ("Retention", "保存期限、争议保全、到期删除留痕"),
    "R-43": ("Status for the insurer", "向保险公司提供录制及质检状态"),
    "R-50": ("Roles and permissions", "角色与权限、最小授权"),
    "R-51": ("Audit log", "审计日志：集中、只增、防篡改"),
    "R-52": ("Personal information", "个人信息加密、脱敏、访问留痕"),
    "R-53": ("Change management", "变更管理：迁移可回滚"),
    "R-54": ("Separation of environments", "环境隔离、生产密钥不入库"),
    "R-55": ("Statistics", "统计：按机构、网点、人员、产品、期间"),
}


# The Ningbo rules (甬金规〔2023〕1号, ../shared/seed): the notice's item 3 and articles 1-16 as
# far as the seed text has them, each with the R-ids that implement it (from the requirements
# catalogue's source notes). An article with no R-id is listed in the pack as not mapped, with
# the reason given here.
@dataclass(frozen=True)
class Article:
    ref: str  # "第六条"
    number: int  # 0 for the notice's item
    summary_zh: str
    requirements: tuple[str, ...]
    note_zh: str = ""


NINGBO_ARTICLES: tuple[Article, ...] = (
    Article("通知第三项", 0, "未通过验收的机构不得通过远程双录销售人身保险产品", ("R-02",)),
    Article("第一条", 1, "制定目的与依据", (), "总则，无系统功能要求"),
    Article("第二条", 2, "远程双录的定义：记录和保存销售过程关键环节，可回放、可查询、可确认",
            ("R-30", "R-31", "R-41")),
    Article("第三条", 3, "保险机构的范围（保险公司、保险专业中介、兼业代理含银行）", (),
            "定义条款，需求目录未单列"),
    Article("第四条", 4, "适用范围：线上渠道向自然人销售保险期间超过一年的人身保险", ("R-01",)),
    Article("第五条", 5, "远程视频通讯与录制能力，通讯私密、安全", ("R-20",)),
    Article("第六条", 6, "有效技术手段核实客户身份，确保本人亲自办理", ("R-12",)),
    Article("第七条", 7, "可采用语音播报代替人工口播话术", ("R-23",)),
    Article("第八条", 8, "定位、网络 IP 检测销售场所，未通过不得双录", ("R-03",)),
    Article("第九条", 9, "用户权限管理：按角色配置录制、查看、统计等权限", ("R-50", "R-55")),
    Article("第十条", 10, "系统建设方式；机构承担信息安全管理责任", (),
            "机构管理责任，非系统功能"),
    Article("第十一条", 11, "开发安全管控，开发测试环境与生产环境分离", ("R-54",),
            "人员分离、编码规范、代码审查、外包协议属机构管理要求，系统只覆盖环境分离与密钥不入库"),
    Article("第十二条", 12, "日志集中管理与存储，保存不少于 1 年，定期审计", ("R-51",)),
    Article("第十三条", 13, "个人信息处理合法、正当、必要，不泄露、不篡改", ("R-10", "R-52")),
    Article("第十四条", 14, "投产、变更、数据迁移：风险评估、回退方案、有效性验证", ("R-53",),
            "风险评估、演练与培训属机构管理要求，系统只覆盖可回滚的迁移"),
    Article("第十五条", 15, "事先取得投保人同意", ("R-10",)),
    Article("第十六条", 16, "符合现场双录监管规定，确保视听资料质量", ("R-30", "R-32"),
            "种子文本在本条中途截断，其后内容未纳入"),
)
