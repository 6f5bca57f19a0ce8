"""livestream: record live WebSocket audio/video into MP4 and WAV, served over HTTP."""
