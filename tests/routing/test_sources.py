"""Source detection for every kind of visitor."""

from __future__ import annotations

import pytest

from routing.sources import classify, clean_tags, host_of, tags_of_url


@pytest.mark.parametrize(
    ("url", "referrer", "kind", "channel", "campaign"),
    [
        ("https://shop.ru/?yclid=123&utm_campaign=spring", None, "paid", "yandex_direct", "spring"),
        ("https://shop.ru/?gclid=abc", "https://www.google.com/", "paid", "google_ads", None),
        ("https://shop.ru/?utm_source=yandex&utm_campaign=x", None, "paid", "yandex_direct", "x"),
        ("https://shop.ru/?utm_source=google&utm_medium=cpc", None, "paid", "google_ads", None),
        ("https://shop.ru/?utm_source=vk&utm_medium=cpc", None, "paid", "vk_ads", None),
        ("https://shop.ru/?utm_source=vk&utm_medium=post", None, "social", "vk", None),
        ("https://shop.ru/?utm_source=Partner%20Site", None, "campaign", "partner_site", None),
        ("https://shop.ru/?utm_source=digest&utm_medium=email", None, "email", "digest", None),
        ("https://shop.ru/?utm_source=yandex&utm_medium=organic", None, "organic", "yandex", None),
        ("https://shop.ru/", "https://yandex.ru/search/?text=x", "organic", "yandex", None),
        ("https://shop.ru/", "https://ya.ru/", "organic", "yandex", None),
        ("https://shop.ru/", "https://www.google.co.uk/", "organic", "google", None),
        ("https://shop.ru/", "https://www.bing.com/search", "organic", "bing", None),
        ("https://shop.ru/", "https://go.mail.ru/search?q=x", "organic", "mail_ru", None),
        ("https://shop.ru/", "https://duckduckgo.com/", "organic", "duckduckgo", None),
        ("https://shop.ru/", "https://vk.com/wall-1", "social", "vk", None),
        ("https://shop.ru/", "https://m.vk.com/", "social", "vk", None),
        ("https://shop.ru/", "https://ok.ru/group", "social", "ok", None),
        ("https://shop.ru/", "https://t.me/channel/5", "social", "telegram", None),
        ("https://shop.ru/", "https://l.facebook.com/", "social", "facebook", None),
        ("https://shop.ru/", "https://www.instagram.com/", "social", "instagram", None),
        ("https://shop.ru/", "https://www.youtube.com/watch", "social", "youtube", None),
        ("https://shop.ru/", "https://dzen.ru/a/x", "social", "dzen", None),
        (
            "https://shop.ru/",
            "https://forum.example.org/t/1",
            "referral",
            "forum.example.org",
            None,
        ),
        ("https://shop.ru/", None, "direct", "direct", None),
        ("https://shop.ru/", "https://www.shop.ru/catalog", "direct", "direct", None),
    ],
)
def test_each_kind_of_visitor(
    url: str, referrer: str | None, kind: str, channel: str, campaign: str | None
) -> None:
    touch = classify(tags_of_url(url), referrer, own_hosts=["shop.ru"])
    assert (touch.kind, touch.channel, touch.campaign) == (kind, channel, campaign)


def test_only_campaign_tags_make_a_new_touch() -> None:
    assert classify(tags_of_url("https://a.ru/?utm_source=x")).is_campaign_click
    assert classify({"gclid": "1"}).is_campaign_click
    assert not classify({}, "https://yandex.ru/").is_campaign_click
    assert not classify({}, None).is_campaign_click


def test_tags_are_cleaned() -> None:
    tags = clean_tags({"utm_source": "  ya ", "utm_medium": "", "foo": "bar", "gclid": 5})
    assert tags == {"utm_source": "ya"}
    assert len(clean_tags({"utm_term": "x" * 500})["utm_term"]) == 200
    assert tags_of_url("http://[bad") == {}
    assert host_of("not a url") is None
