"""Reading real-world e-mail: Russian charsets, encoded headers and names, HTML, bounces."""

from __future__ import annotations

import base64
import datetime as dt
import quopri

from channels.base import Identity
from channels.mail_parse import html_to_text, parse_email, sanitize_html


def b_word(text: str, charset: str) -> str:
    return f"=?{charset}?B?{base64.b64encode(text.encode(charset)).decode()}?="


def q_word(text: str, charset: str) -> str:
    encoded = quopri.encodestring(text.encode(charset), header=True).decode()
    return f"=?{charset}?Q?{encoded}?="


def test_windows_1251_quoted_printable_with_an_encoded_subject_and_attachment_name() -> None:
    body = "Добрый день!\nПришлите, пожалуйста, счёт на 20 коробок.\n"
    attachment = "Реквизиты ООО «Ромашка».docx"
    raw = (
        (
            "From: " + b_word("Иван Петров", "windows-1251") + " <Ivan.Petrov@Example.RU>\r\n"
            "To: sales@shop.test\r\n"
            "Subject: " + b_word("Заявка на поставку", "windows-1251") + "\r\n"
            "Date: Mon, 09 Jun 2025 10:15:00 +0300\r\n"
            "Message-ID: <req-1@example.ru>\r\n"
            "MIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="XYZ"\r\n\r\n'
            "--XYZ\r\n"
            "Content-Type: text/plain; charset=windows-1251\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        ).encode()
        + quopri.encodestring(body.encode("windows-1251"))
        + (
            "\r\n--XYZ\r\n"
            "Content-Type: application/vnd.openxmlformats-officedocument.wordprocessingml.document;"
            ' name="' + b_word(attachment, "windows-1251") + '"\r\n'
            "Content-Transfer-Encoding: base64\r\n"
            'Content-Disposition: attachment; filename="'
            + b_word(attachment, "windows-1251")
            + '"\r\n\r\n'
            + base64.b64encode(b"PK\x03\x04 docx").decode()
            + "\r\n"
            "--XYZ--\r\n"
        ).encode()
    )
    msg = parse_email(raw, channel="mail-sales")
    assert msg.kind == "email"
    assert msg.sender == Identity("email", "ivan.petrov@example.ru")
    assert msg.sender_name == "Иван Петров"
    assert msg.email is not None
    assert msg.email.subject == "Заявка на поставку"
    assert msg.text == body.strip()
    assert msg.sent_at == dt.datetime(2025, 6, 9, 7, 15, tzinfo=dt.UTC)
    (att,) = msg.attachments
    assert att.filename == attachment
    assert att.data == b"PK\x03\x04 docx"
    assert att.size == len(b"PK\x03\x04 docx")
    assert not msg.email.auto_reply and msg.email.bounce is None


def test_koi8_r_base64_with_q_encoded_subject_and_rfc2231_filename() -> None:
    body = "Здравствуйте. Когда будет отгрузка? Ждём с нетерпением."
    raw = (
        "From: " + q_word("Анна", "koi8-r") + " <anna@example.ru>\r\n"
        "Subject: " + q_word("Вопрос по отгрузке", "koi8-r") + "\r\n"
        "Message-ID: <q-2@example.ru>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        "--b1\r\n"
        "Content-Type: text/plain; charset=KOI8-R\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(body.encode("koi8-r")).decode()
        + "\r\n"
        "--b1\r\n"
        "Content-Type: application/pdf\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "Content-Disposition: attachment;"
        " filename*=utf-8''%D0%A1%D1%87%D1%91%D1%82%20%E2%84%96%2012.pdf\r\n\r\n"
        + base64.b64encode(b"%PDF-1.4").decode()
        + "\r\n"
        "--b1--\r\n"
    ).encode("ascii")
    msg = parse_email(raw, channel="mail-sales")
    assert msg.email is not None
    assert msg.email.subject == "Вопрос по отгрузке"
    assert msg.sender_name == "Анна"
    assert msg.text == body
    assert msg.attachments[0].filename == "Счёт № 12.pdf"


def test_a_mislabelled_charset_still_reads() -> None:
    body = "Привет, это письмо в windows-1251, а заголовок врёт."
    raw = (
        b"From: a@example.ru\r\nSubject: test\r\nContent-Type: text/plain; charset=x-unknown\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" + body.encode("windows-1251")
    )
    assert parse_email(raw, channel="m").text == body


def test_html_is_sanitised_and_a_text_version_derived() -> None:
    markup = (
        "<html><head><style>p{color:red}</style><script>alert(1)</script></head><body>"
        "<p>Здравствуйте!</p><p>Наш <a href='javascript:alert(2)'>прайс</a> и "
        "<a href='https://example.ru/p'>сайт</a>.</p>"
        "<img src=x onerror='alert(3)'><div onclick='steal()'>Спасибо</div></body></html>"
    )
    raw = (
        b"From: shop@example.ru\r\nSubject: html\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(markup.encode())
    )
    msg = parse_email(raw, channel="m")
    assert msg.email is not None and msg.email.html is not None
    html = msg.email.html
    for evil in ("<script", "alert(1)", "onerror", "onclick", "javascript:", "<style"):
        assert evil not in html
    assert 'href="https://example.ru/p"' in html
    assert "Здравствуйте!" in html
    assert msg.text is not None
    assert "Здравствуйте!" in msg.text and "Спасибо" in msg.text
    assert "alert" not in msg.text and "color:red" not in msg.text


def test_sanitize_keeps_mail_layout_and_cid_images() -> None:
    out = sanitize_html(
        '<table width="100%"><tr><td><img src="cid:logo@x" alt="logo"></td></tr></table>'
    )
    assert 'src="cid:logo@x"' in out and "<table" in out


def test_html_to_text_breaks_blocks() -> None:
    assert html_to_text("<p>one</p><p>two<br>three</p>") == "one\n\ntwo\nthree"


def test_threading_headers() -> None:
    raw = (
        b"From: client@example.ru\r\nSubject: Re: offer\r\n"
        b"Message-ID: <c3@example.ru>\r\nIn-Reply-To: <ours-2@shop.test>\r\n"
        b"References: <ours-1@shop.test>\r\n <c1@example.ru> <ours-2@shop.test>\r\n\r\nok\r\n"
    )
    msg = parse_email(raw, channel="m")
    assert msg.email is not None
    assert msg.provider_message_id == "<c3@example.ru>"
    assert msg.reply_to == msg.email.in_reply_to == "<ours-2@shop.test>"
    assert msg.email.references == ("<ours-1@shop.test>", "<c1@example.ru>", "<ours-2@shop.test>")
    assert msg.email.thread_root == "<ours-1@shop.test>"


def test_a_message_without_message_id_gets_a_stable_one() -> None:
    raw = b"From: a@example.ru\r\nSubject: x\r\n\r\nbody\r\n"
    first = parse_email(raw, channel="m").provider_message_id
    assert first == parse_email(raw, channel="m").provider_message_id
    assert first.endswith("@generated>")


def test_dsn_bounce_names_the_failed_recipient_and_our_message() -> None:
    raw = (
        b"From: Mail Delivery System <MAILER-DAEMON@mx.shop.test>\r\n"
        b"To: sales@shop.test\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        b"Message-ID: <bounce-1@mx.shop.test>\r\nAuto-Submitted: auto-replied\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="R"\r\n\r\n'
        b"--R\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        b"I'm sorry to have to inform you that your message could not be delivered.\r\n"
        b"--R\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.shop.test\r\nArrival-Date: Mon, 9 Jun 2025 10:00:00 +0300\r\n\r\n"
        b"Final-Recipient: rfc822; nobody@example.ru\r\n"
        b"Original-Recipient: rfc822;nobody@example.ru\r\n"
        b"Action: failed\r\nStatus: 5.1.1\r\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.ru>: Recipient address rejected\r\n\r\n"
        b"--R\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        b"From: sales@shop.test\r\nTo: nobody@example.ru\r\nSubject: Offer\r\n"
        b"Message-ID: <ours-7@shop.test>\r\n\r\n"
        b"--R--\r\n"
    )
    msg = parse_email(raw, channel="m")
    assert msg.email is not None
    bounce = msg.email.bounce
    assert bounce is not None
    assert bounce.recipient == "nobody@example.ru"
    assert (bounce.status, bounce.action) == ("5.1.1", "failed")
    assert bounce.permanent
    assert "Recipient address rejected" in (bounce.diagnostic or "")
    assert bounce.original_message_id == "<ours-7@shop.test>"
    assert msg.email.creates_nothing


def test_dsn_quoting_the_whole_message() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.test\r\nSubject: failure\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type="delivery-status"; boundary="R"\r\n\r\n'
        b"--R\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        b"--R\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.test\r\n\r\nFinal-Recipient: rfc822; <Gone@Example.ru>\r\n"
        b"Action: delayed\r\nStatus: 4.4.1\r\n\r\n"
        b"--R\r\nContent-Type: message/rfc822\r\n\r\n"
        b"From: sales@shop.test\r\nMessage-ID: <ours-8@shop.test>\r\nSubject: x\r\n\r\nbody\r\n"
        b"--R--\r\n"
    )
    msg = parse_email(raw, channel="m")
    assert msg.email is not None
    bounce = msg.email.bounce
    assert bounce is not None
    assert (bounce.recipient, bounce.status, bounce.action) == (
        "gone@example.ru",
        "4.4.1",
        "delayed",
    )
    assert not bounce.permanent
    assert bounce.original_message_id == "<ours-8@shop.test>"


def _auto(headers: bytes, subject: bytes = b"Re: offer") -> tuple[bool, str | None]:
    raw = b"From: client@example.ru\r\nSubject: " + subject + b"\r\n" + headers + b"\r\nbody\r\n"
    details = parse_email(raw, channel="m").email
    assert details is not None
    return details.auto_reply, details.auto_reply_reason


def test_auto_replies_are_flagged() -> None:
    assert _auto(b"Auto-Submitted: auto-replied\r\n")[0]
    assert _auto(b"Auto-Submitted: auto-generated\r\n")[0]
    assert _auto(b"X-Autoreply: yes\r\n")[0]
    assert _auto(b"X-Autorespond: 1\r\n")[0]
    assert _auto(b"Precedence: auto_reply\r\n")[0]
    assert _auto(b"Precedence: bulk\r\n")[0]
    assert _auto(b"Precedence: junk\r\n")[0]
    subject = "=?utf-8?B?" + base64.b64encode("Автоответ: я в отпуске".encode()).decode() + "?="
    assert _auto(b"", subject.encode()) == (True, "subject looks like an auto-reply")
    assert _auto(b"", b"Out of Office: back on Monday")[0]


def test_ordinary_mail_is_not_an_auto_reply() -> None:
    assert _auto(b"Auto-Submitted: no\r\n") == (False, None)
    assert _auto(b"") == (False, None)
    subject = "=?utf-8?B?" + base64.b64encode("Re: про отпуск менеджера".encode()).decode() + "?="
    assert _auto(b"", subject.encode()) == (False, None)


def test_an_attachment_over_the_cap_is_described_not_kept() -> None:
    raw = (
        b"From: a@example.ru\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--B\r\nContent-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="big.zip"\r\n\r\n'
        + base64.encodebytes(b"z" * 3000)
        + b"--B--\r\n"
    )
    msg = parse_email(raw, channel="m", attachment_max_bytes=1000)
    (att,) = msg.attachments
    assert (att.filename, att.size, att.data) == ("big.zip", 3000, None)
    assert att.refused == "larger than 1000 bytes"
    assert msg.text == "see attached"
