"""Turning a session's chunks into files: the ffmpeg process, the video and the audio."""
