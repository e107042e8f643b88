"""Media services: WebRTC call hub and recorder, TTS engines, OCR, face match, liveness."""
