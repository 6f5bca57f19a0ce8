"""H.264 bitstreams written bit by bit, for tests that need an SPS (or a whole picture) with
exactly the fields they choose: a bit writer with exp-Golomb codes, the emulation prevention of
7.4.1, and a picture any decoder can decode without an encoder (one IDR slice of I_PCM
macroblocks, whose samples are stored raw).

Written from ITU-T H.264 (7.3.2.1.1 SPS, 7.3.2.2 PPS, 7.3.3 slice header, 7.3.5 macroblock
layer), independently of :mod:`livestream.wire.h264`, so the two can be checked against each
other and against a real decoder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The profiles whose SPS carries chroma format, bit depths and scaling matrices.
HIGH_PROFILES = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))
# Each macroblock of I_PCM 4:2:0 8-bit: mb_type 25, then 256 luma and 2 x 64 chroma samples.
I_PCM = 25
PCM_BYTES = 256 + 2 * 64
MAX_SIDE = 8192


class BitWriter:
    def __init__(self) -> None:
        self._out = bytearray()
        self._acc = 0
        self._bits = 0

    def u(self, n: int, value: int) -> None:
        assert 0 <= value < 1 << n or n == value == 0, (n, value)
        self._acc = (self._acc << n) | value
        self._bits += n
        while self._bits >= 8:
            self._bits -= 8
            self._out.append((self._acc >> self._bits) & 0xFF)
        self._acc &= (1 << self._bits) - 1

    def flag(self, value: bool) -> None:
        self.u(1, int(value))

    def ue(self, value: int) -> None:
        """ue(v) (9.1): as many zeros as the code's length less one, then value + 1."""
        code = value + 1
        self.u(code.bit_length() - 1, 0)
        self.u(code.bit_length(), code)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def overlong(self, zeros: int) -> None:
        """A code with ``zeros`` leading zeros (past 31 no 32-bit field holds it)."""
        self.u(zeros, 0)
        self.u(zeros + 1, 1 << zeros)

    def align(self) -> None:
        if self._bits:
            self.u(8 - self._bits, 0)

    def raw(self, data: bytes) -> None:
        assert self._bits == 0
        self._out += data

    def rbsp(self) -> bytes:
        """The bytes written, closed by rbsp_trailing_bits (a stop bit, then zeros)."""
        self.u(1, 1)
        self.align()
        return bytes(self._out)


def escape(rbsp: bytes) -> bytes:
    """Emulation prevention (7.4.1): ``03`` after two zero bytes before any byte up to ``03``."""
    return re.sub(b"\x00\x00(?=[\x00-\x03])", b"\x00\x00\x03", rbsp)


@dataclass(frozen=True)
class Sps:
    """The fields of a sequence parameter set, as written (``*_minus*`` fields hold the coded
    value). ``scaling``: None for no matrix, else 8 lists, each None (not sent) or its deltas."""

    profile: int = 66
    constraints: int = 0
    level: int = 30
    sps_id: int = 0
    chroma: int = 1
    separate_planes: bool = False
    luma_depth_minus8: int = 0
    chroma_depth_minus8: int = 0
    bypass: bool = False
    scaling: tuple[tuple[int, ...] | None, ...] | None = None
    frame_num_minus4: int = 0
    poc_type: int = 0
    poc_lsb_minus4: int = 0
    poc_always_zero: bool = False
    offset_non_ref: int = 0
    offset_top_bottom: int = 0
    ref_offsets: tuple[int, ...] = ()
    ref_frames: int = 1
    gaps: bool = False
    width_mbs: int = 20
    height_units: int = 15
    frame_mbs_only: bool = True
    mbaff: bool = False
    direct_8x8: bool = True
    crop: tuple[int, int, int, int] | None = None

    @property
    def high(self) -> bool:
        return self.profile in HIGH_PROFILES

    @property
    def macroblocks(self) -> int:
        return self.width_mbs * self.height_units * (1 if self.frame_mbs_only else 2)

    def cropped(self) -> tuple[int, int]:
        """The picture size 7.4.2.1.1 gives (4:2:0: crop units of 2 across, 2 or 4 down)."""
        field = 1 if self.frame_mbs_only else 2
        width, height = 16 * self.width_mbs, 16 * self.height_units * field
        if self.crop is not None:
            left, right, top, bottom = self.crop
            width -= 2 * (left + right)
            height -= 2 * field * (top + bottom)
        return width, height

    def expected(self) -> tuple[int, int] | None:
        """The size a checker of 4:2:0 8-bit streams up to 8192 a side should find, or None
        where it should refuse."""
        if self.high and (self.chroma != 1 or self.luma_depth_minus8 or self.chroma_depth_minus8):
            return None
        width, height = self.cropped()
        if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
            return None
        if self.width_mbs > MAX_SIDE // 16 or self.height_units > MAX_SIDE // 16:
            return None
        return width, height

    def write(self, bits: BitWriter) -> None:
        bits.u(8, self.profile)
        bits.u(8, self.constraints)
        bits.u(8, self.level)
        bits.ue(self.sps_id)
        if self.high:
            bits.ue(self.chroma)
            if self.chroma == 3:
                bits.flag(self.separate_planes)
            bits.ue(self.luma_depth_minus8)
            bits.ue(self.chroma_depth_minus8)
            bits.flag(self.bypass)
            bits.flag(self.scaling is not None)
            for i, deltas in enumerate(self.scaling or ()):
                bits.flag(deltas is not None)
                if deltas is not None:
                    _scaling_list(bits, deltas, 16 if i < 6 else 64)
        bits.ue(self.frame_num_minus4)
        bits.ue(self.poc_type)
        if self.poc_type == 0:
            bits.ue(self.poc_lsb_minus4)
        elif self.poc_type == 1:
            bits.flag(self.poc_always_zero)
            bits.se(self.offset_non_ref)
            bits.se(self.offset_top_bottom)
            bits.ue(len(self.ref_offsets))
            for offset in self.ref_offsets:
                bits.se(offset)
        bits.ue(self.ref_frames)
        bits.flag(self.gaps)
        bits.ue(self.width_mbs - 1)
        bits.ue(self.height_units - 1)
        bits.flag(self.frame_mbs_only)
        if not self.frame_mbs_only:
            bits.flag(self.mbaff)
        bits.flag(self.direct_8x8)
        bits.flag(self.crop is not None)
        for offset in self.crop or ():
            bits.ue(offset)
        bits.flag(False)  # no VUI

    def nal(self) -> bytes:
        bits = BitWriter()
        self.write(bits)
        return b"\x67" + escape(bits.rbsp())


def _scaling_list(bits: BitWriter, deltas: tuple[int, ...], size: int) -> None:
    """Write deltas as 7.3.2.1.1.1 reads them: none after one that makes nextScale 0."""
    last = 8
    for delta in deltas[:size]:
        bits.se(delta)
        nxt = (last + delta + 256) % 256
        if nxt == 0:
            return
        last = nxt
    # Deltas of 0 repeat the last scale to the list's end.
    for _ in range(size - len(deltas)):
        bits.se(0)


def pps_nal(sps_id: int = 0) -> bytes:
    """PPS 0 for CAVLC, one slice group, no weighted prediction, deblocking controlled."""
    bits = BitWriter()
    bits.ue(0)  # pic_parameter_set_id
    bits.ue(sps_id)
    bits.flag(False)  # entropy_coding_mode (CAVLC)
    bits.flag(False)  # bottom_field_pic_order_in_frame_present
    bits.ue(0)  # num_slice_groups_minus1
    bits.ue(0)
    bits.ue(0)  # num_ref_idx_l0/l1_default_active_minus1
    bits.flag(False)
    bits.u(2, 0)  # weighted_pred, weighted_bipred_idc
    bits.se(0)
    bits.se(0)
    bits.se(0)  # pic_init_qp/qs_minus26, chroma_qp_index_offset
    bits.flag(True)  # deblocking_filter_control_present
    bits.flag(False)  # constrained_intra_pred
    bits.flag(False)  # redundant_pic_cnt_present
    return b"\x68" + escape(bits.rbsp())


def pcm_idr(sps: Sps, sample: int = 0x80) -> bytes:
    """A whole access unit (Annex B: SPS, PPS, IDR) of one I slice of I_PCM macroblocks, grey
    unless told: a picture of ``sps``'s size any H.264 decoder decodes."""
    bits = BitWriter()
    bits.ue(0)  # first_mb_in_slice
    bits.ue(7)  # slice_type: I, every slice of the picture
    bits.ue(0)  # pic_parameter_set_id
    bits.u(sps.frame_num_minus4 + 4, 0)  # frame_num
    if not sps.frame_mbs_only:
        bits.flag(False)  # field_pic_flag: a frame (MBAFF when the SPS says so)
    bits.ue(0)  # idr_pic_id
    if sps.poc_type == 0:
        bits.u(sps.poc_lsb_minus4 + 4, 0)
    elif sps.poc_type == 1 and not sps.poc_always_zero:
        bits.se(0)  # delta_pic_order_cnt[0]
    bits.flag(False)
    bits.flag(False)  # dec_ref_pic_marking of an IDR: no_output_of_prior_pics, long_term
    bits.se(0)  # slice_qp_delta
    bits.ue(1)  # disable_deblocking_filter_idc
    samples = bytes((sample,)) * PCM_BYTES
    mbaff = not sps.frame_mbs_only and sps.mbaff
    for i in range(sps.macroblocks):
        if mbaff and i % 2 == 0:
            bits.flag(False)  # mb_field_decoding_flag, once per pair
        bits.ue(I_PCM)
        bits.align()  # pcm_alignment_zero_bit
        bits.raw(samples)
    idr = b"\x65" + escape(bits.rbsp())
    return b"".join(b"\x00\x00\x00\x01" + nal for nal in (sps.nal(), pps_nal(sps.sps_id), idr))
