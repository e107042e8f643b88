"""Channels: WeChat official account and mini-program, bank app, invitations, chatbot."""
