"""Low-Latency HLS of the live sessions, taken from the fragmented MP4s being recorded.

Each live session's ``temp/`` fMP4 (the encoder's, or the daemon's own for encoded media) is
read as it grows (``tail``), its fragments grouped into parts and segments (``segments``), and
offered as RFC 8216bis media playlists (``playlist``) with blocking reloads held as bounded
pending Deferreds (``waiting``, ``track``). Nothing is encoded or copied for a player: a part is
a byte range of the file being recorded, read once and shared by every player. Pure parts
(``fmp4``, ``segments``, ``playlist``) have no Twisted imports.
"""
