"""The requirements catalogue (R-xx) the acceptance evidence pack maps to code and tests (R-02).

Ids and short titles follow the project's requirements catalogue; the full texts live there.
"""

from __future__ import annotations

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
