"""Messenger and mail adapters (WhatsApp, e-mail, SMS, Telegram) behind one provider interface.

An adapter talks to one provider and speaks plain data: provider payloads in, frozen dataclasses
out (:mod:`channels.base`), and the other way round for sending. No database, no event bus, no
import of ``contact_center``: the composition root builds adapters from config, the CRM stores
what they return.

Modules
-------
- :mod:`channels.base`: the data (``InboundMessage``, ``StatusUpdate``, ``Attachment``,
  ``Referral``, ``EmailDetails``/``Bounce``, ``SendResult``, ``OutboundMedia``,
  ``FetchedMedia``, ``MessageTemplate``, ``WebhookRequest``) and the capability protocols
  (``ChannelAdapter``, ``WebhookParser``, ``Sender``, ``MediaSender``, ``TemplateSender``,
  ``MediaFetcher``), runtime-checkable.
- :mod:`channels.errors`: ``SignatureInvalid`` (403, ``reason`` to log), ``PayloadInvalid``
  (400), ``ChannelConfigInvalid`` (``problems`` by key), ``ChannelSendFailed`` (``code``,
  ``retryable``), ``MediaRefused``, ``MediaUnavailable``; all ``crm_core.errors.DomainError``.
- :mod:`channels.config`: pydantic models ``WhatsAppConfig``, ``EmailConfig``,
  ``TelegramConfig``, ``SmsConfig``; the union ``ChannelConfig`` (discriminated on ``kind``),
  ``parse_channel_config(dict)`` and ``parse_channels(list)``.
- :mod:`channels.registry`: ``ADAPTERS`` (kind -> class), ``adapter_class(kind)``,
  ``build_adapter(config)``.
- :mod:`channels.whatsapp` (``WhatsAppAdapter``; pure ``parse_webhook_payload``,
  ``verify_signature``, ``verify_subscription``, ``sign``), :mod:`channels.telegram`
  (``TelegramAdapter``; ``parse_update``, ``start_payload``), :mod:`channels.sms`
  (``SmscAdapter``; ``parse_callback``, ``sms_segments``), :mod:`channels.mail`
  (``EmailAdapter``, ``ImapReceiver``, ``MailboxState``, ``MailBatch``, ``OutboundEmail``) and
  :mod:`channels.mail_parse` (``parse_email``, ``sanitize_html``).

Wiring (for the composition root)
---------------------------------
1. ``configs = parse_channels(settings_channels_list)`` once at start; a
   ``ChannelConfigInvalid`` names the bad keys (``"[2].app_secret"``).
2. One ``cleanup_ctx`` entry builds ``{cfg.code: build_adapter(cfg)}`` and ``await
   adapter.close()`` for each on shutdown. For each e-mail channel, a background task runs
   ``adapter.receiver().watch(stored_states, handle)``: ``handle(batch)`` stores
   ``batch.mails`` and ``batch.state`` (per mailbox: UIDVALIDITY + last UID) in ONE transaction;
   mail with ``message.email.creates_nothing`` (auto-reply, bounce) creates no lead; a bounce's
   ``original_message_id`` finds our outbound message, ``recipient`` the address to mark.
3. Webhooks: ``GET /webhooks/whatsapp/{code}`` -> ``adapter.verify_subscription(request.query)``
   answers the challenge as text/plain (``SignatureInvalid`` -> 403). ``POST
   /webhooks/{kind}/{code}`` -> ``items = adapter.parse_webhook(WebhookRequest(method,
   request.headers, await request.read(), request.query, received_at=now))``;
   ``SignatureInvalid`` -> log ``exc.reason`` and answer 403, ``PayloadInvalid`` -> 400; else
   store the raw body and ``items``, answer 200 and process asynchronously. Items are
   idempotent on ``(channel, provider_message_id)`` (providers redeliver; for a
   ``StatusUpdate`` on ``(channel, provider_message_id, status)``).
4. Identification: ``message.identities`` lists every ``Identity(kind, value)`` the message
   reveals (``wa_id``, ``bsuid``, ``telegram``, ``phone`` in E.164, ``email``), the channel's
   own first; ``message.referral`` (Click-to-WhatsApp ad) and ``message.start_payload``
   (Telegram ``/start`` = website visitor id) carry the source.
5. Sending (from the outbox job): check ``adapter.messaging_window_open(last_inbound_at, now)``
   first (WhatsApp 24 h; outside it only ``send_template``); call ``send_text`` /
   ``send_media`` / ``send_template`` / ``EmailAdapter.send_email``; keep
   ``result.provider_message_id`` (the key status updates and e-mail replies come back with)
   and ``result.cost``; on ``ChannelSendFailed`` retry with back-off when ``exc.retryable``,
   else store the message as failed with ``exc.code``/``exc.message``.
6. Media: ``await adapter.fetch_media(attachment.ref)`` (WhatsApp media id, Telegram file_id)
   returns bytes + mime with the channel's size cap; e-mail attachments arrive with ``data``.
   Templates: ``await whatsapp.sync_templates()`` (needs ``waba_id``).
"""
