"""Listening to voices: voice activity detection (and, next, speech recognition) on 16 kHz mono
audio, for the live call and for QA after it."""
