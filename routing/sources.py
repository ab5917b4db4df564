"""Where a website visitor came from, worked out from the page's URL parameters and referrer.

Pure functions, no I/O. The outcome is a :class:`Touch`: a ``kind`` (the class of source a
number pool may match: paid, organic, social, referral, direct, email, campaign) and a
``channel`` (the concrete one: ``yandex_direct``, ``google``, ``vk``, a referring host …).

Order of evidence, strongest first: a click id (``yclid``: Yandex Direct, ``gclid``: Google
Ads), UTM tags, then the referrer (search engines, social networks, other sites), else direct.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
CLICK_IDS = ("yclid", "gclid")
TAG_KEYS = UTM_KEYS + CLICK_IDS
_MAX_TAG = 200
_MAX_CHANNEL = 64

PAID_MEDIUMS = frozenset(
    {"cpc", "ppc", "cpm", "cpa", "cpv", "cpo", "paid", "paidsearch", "paid_search"}
    | {"paid_social", "paidsocial", "display", "banner", "retargeting", "remarketing"}
    | {"ads", "ad", "smm_paid"}
)
EMAIL_MEDIUMS = frozenset({"email", "e-mail", "newsletter", "mail", "rassylka"})
ORGANIC_MEDIUMS = frozenset({"organic", "seo"})
SOCIAL_MEDIUMS = frozenset({"social", "smm", "social_media", "socialmedia"})

# utm_source aliases of the ad networks whose pools customers buy most: (paid, unpaid) channel.
_UTM_NETWORKS: dict[str, tuple[str, str]] = {}
for _aliases, _paid, _free in (
    (
        "yandex ya yandex_direct yandexdirect ydirect direct.yandex yandex.direct",
        "yandex_direct",
        None,
    ),
    ("google google_ads googleads adwords google_adwords", "google_ads", None),
    ("vk vkontakte vk.com vk_ads vkads", "vk_ads", "vk"),
    ("mytarget my_target mt", "vk_ads", None),
    ("facebook fb facebook.com meta", "facebook_ads", "facebook"),
    ("instagram ig insta", "facebook_ads", "instagram"),
    ("telegram tg telegram_ads", "telegram_ads", "telegram"),
    ("ok odnoklassniki ok.ru", "vk_ads", "ok"),
    ("bing microsoft msads", "bing_ads", None),
    ("avito", "avito", None),
):
    for _alias in _aliases.split():
        _UTM_NETWORKS[_alias] = (_paid, _free or _paid)


def _host_rule(pattern: str) -> re.Pattern[str]:
    return re.compile(rf"(^|\.)(?:{pattern})$")


# (pattern of the referrer host, channel); checked in order, social first: dzen.ru is Yandex's.
SOCIAL_HOSTS = [
    (_host_rule(r"vk\.com|vk\.ru|vkontakte\.ru"), "vk"),
    (_host_rule(r"ok\.ru|odnoklassniki\.ru"), "ok"),
    (_host_rule(r"t\.me|telegram\.org|telegram\.me"), "telegram"),
    (_host_rule(r"facebook\.com|fb\.com|fb\.me"), "facebook"),
    (_host_rule(r"instagram\.com"), "instagram"),
    (_host_rule(r"youtube\.com|youtu\.be"), "youtube"),
    (_host_rule(r"dzen\.ru|zen\.yandex\.ru"), "dzen"),
    (_host_rule(r"rutube\.ru"), "rutube"),
    (_host_rule(r"my\.mail\.ru"), "mail_ru_social"),
    (_host_rule(r"twitter\.com|x\.com|t\.co"), "twitter"),
    (_host_rule(r"linkedin\.com|lnkd\.in"), "linkedin"),
    (_host_rule(r"tiktok\.com"), "tiktok"),
    (_host_rule(r"pinterest\.[a-z.]+"), "pinterest"),
    (_host_rule(r"reddit\.com"), "reddit"),
    (_host_rule(r"wa\.me|whatsapp\.com"), "whatsapp"),
]
SEARCH_HOSTS = [
    (_host_rule(r"yandex\.[a-z]{2,3}|yandex\.com\.tr|ya\.ru"), "yandex"),
    (_host_rule(r"google\.[a-z]{2,3}|google\.co\.[a-z]{2}|google\.com\.[a-z]{2}"), "google"),
    (_host_rule(r"bing\.com"), "bing"),
    (_host_rule(r"go\.mail\.ru|search\.mail\.ru"), "mail_ru"),
    (_host_rule(r"duckduckgo\.com"), "duckduckgo"),
    (_host_rule(r"search\.yahoo\.com|yahoo\.co\.jp"), "yahoo"),
    (_host_rule(r"rambler\.ru"), "rambler"),
    (_host_rule(r"ecosia\.org"), "ecosia"),
    (_host_rule(r"baidu\.com"), "baidu"),
    (_host_rule(r"search\.brave\.com"), "brave"),
    (_host_rule(r"qwant\.com"), "qwant"),
    (_host_rule(r"startpage\.com"), "startpage"),
]


@dataclass(frozen=True)
class Touch:
    """One visit's source.

    ``utm`` holds the tags as sent (``utm_*``, ``yclid``, ``gclid``; trimmed); ``campaign`` is
    ``utm_campaign``; ``referrer_host`` the referring host for referrals and search engines.
    """

    kind: str
    channel: str
    campaign: str | None = None
    utm: dict[str, str] = field(default_factory=dict)
    referrer_host: str | None = None

    @property
    def is_campaign_click(self) -> bool:
        """A new click on a campaign replaces a visitor's first touch; nothing else does."""
        return bool(self.utm)


def tags_of_url(url: str | None) -> dict[str, str]:
    """The UTM tags and click ids in ``url``'s query string (unknown parameters dropped)."""
    if not url:
        return {}
    try:
        query = urlsplit(url).query
    except ValueError:
        return {}
    return clean_tags(dict(parse_qsl(query)))


def clean_tags(tags: Mapping[str, object]) -> dict[str, str]:
    """Only known tags, as trimmed non-empty strings of at most 200 characters."""
    out: dict[str, str] = {}
    for key in TAG_KEYS:
        value = tags.get(key)
        if isinstance(value, str) and value.strip():
            out[key] = value.strip()[:_MAX_TAG]
    return out


def host_of(url: str | None) -> str | None:
    """The lower-case host of ``url`` without ``www.``, or None."""
    if not url:
        return None
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    if not host:
        return None
    return host.removeprefix("www.")


def classify(
    tags: Mapping[str, str], referrer: str | None = None, *, own_hosts: Iterable[str] = ()
) -> Touch:
    """The source of a visit with ``tags`` (see :func:`clean_tags`) and ``referrer``.

    A referrer on one of ``own_hosts`` (the site's own pages) says nothing: such a visit is
    direct unless tags say otherwise."""
    tags = clean_tags(tags)
    campaign = tags.get("utm_campaign")
    if "yclid" in tags:
        return Touch("paid", "yandex_direct", campaign, tags)
    if "gclid" in tags:
        return Touch("paid", "google_ads", campaign, tags)
    if tags:
        kind, channel = _classify_utm(tags)
        return Touch(kind, channel, campaign, tags)
    host = host_of(referrer)
    own = {h.removeprefix("www.").lower() for h in own_hosts}
    if host is None or host in own:
        return Touch("direct", "direct")
    for rule, channel in SOCIAL_HOSTS:
        if rule.search(host):
            return Touch("social", channel, referrer_host=host)
    for rule, channel in SEARCH_HOSTS:
        if rule.search(host):
            return Touch("organic", channel, referrer_host=host)
    return Touch("referral", slug(host), referrer_host=host)


def _classify_utm(tags: Mapping[str, str]) -> tuple[str, str]:
    source = tags.get("utm_source", "").lower()
    medium = tags.get("utm_medium", "").lower()
    network = _UTM_NETWORKS.get(source)
    if medium in ORGANIC_MEDIUMS:
        return "organic", slug(source) if source else "organic"
    if medium in EMAIL_MEDIUMS:
        return "email", slug(source) if source else "email"
    if network is not None:
        paid, free = network
        unpaid = medium in SOCIAL_MEDIUMS or (medium and medium not in PAID_MEDIUMS)
        if unpaid and free != paid:
            return "social", free
        return "paid", paid
    if medium in SOCIAL_MEDIUMS:
        return "social", slug(source) if source else "social"
    if medium in PAID_MEDIUMS:
        return "paid", slug(source) if source else "paid"
    return "campaign", slug(source) if source else "campaign"


def slug(text: str) -> str:
    """A channel code from free text: ``[a-z0-9_.-]``, at most 64 characters."""
    cleaned = re.sub(r"[^a-z0-9_.-]+", "_", text.lower()).strip("_")
    return cleaned[:_MAX_CHANNEL] or "unknown"
