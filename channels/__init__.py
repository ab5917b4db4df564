"""Messenger and mail adapters (WhatsApp, e-mail, SMS, Telegram) behind one provider interface."""
