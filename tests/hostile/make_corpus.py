#!/usr/bin/env python3
"""Generate a deterministic corpus of hostile upload files for vidpipe.

Usage: python3 tests/hostile/make_corpus.py OUT_DIR SECRET_PATH

SECRET_PATH must be absolute.  Every file that references a local file
references SECRET_PATH (the test turns it into a FIFO to detect opens).
Writes OUT_DIR/manifest.json: [{"file": name, "what": description}, ...].

Standard library only; needs `ffmpeg` on PATH (Debian ffmpeg 5.1 tested).
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import xml.sax.saxutils
from concurrent.futures import ThreadPoolExecutor

# Bit-exact flags: no random Matroska UIDs, no encoder version strings in
# the container, so the output is byte-identical from run to run.
BITEXACT = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact"]


def ffmpeg(*args):
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y", *args]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise RuntimeError("ffmpeg failed (%d): %s\n%s"
                           % (r.returncode, " ".join(cmd), r.stderr.decode(errors="replace")))


def x264(*extra):
    # Single-threaded x264 keeps encoding deterministic and cheap.
    return ["-c:v", "libx264", "-preset", "ultrafast", "-threads", "1", *extra]


# --------------------------------------------------------------------------
# ISO BMFF (MP4) box handling
# --------------------------------------------------------------------------

def iter_boxes(data, start, end):
    """Yield (type, box_start, header_len, box_end, largesize) for boxes in data[start:end]."""
    pos = start
    while pos < end:
        if end - pos < 8:
            raise ValueError("truncated box header at %d" % pos)
        size, btype = struct.unpack_from(">I4s", data, pos)
        hdr = 8
        large = False
        if size == 1:
            if end - pos < 16:
                raise ValueError("truncated largesize header at %d" % pos)
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            hdr = 16
            large = True
        elif size == 0:
            size = end - pos
        if size < hdr or pos + size > end:
            raise ValueError("bad size %d for box %r at %d" % (size, btype, pos))
        yield btype, pos, hdr, pos + size, large
        pos += size


def box_header(btype, payload_len, large):
    if large or payload_len + 8 > 0xFFFFFFFF:
        return struct.pack(">I4sQ", 1, btype, payload_len + 16)
    return struct.pack(">I4s", payload_len + 8, btype)


MP4_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"dinf"}


def rewrite_dref(payload, location):
    """dref payload = version/flags(4) entry_count(4) entries.  Turn every
    self-contained 'url ' entry into an external reference."""
    count = struct.unpack_from(">I", payload, 4)[0]
    out = [payload[:8]]
    changed = 0
    pos = 8
    for btype, bstart, hdr, bend, large in iter_boxes(payload, 8, len(payload)):
        if btype == b"url ":
            flags = struct.unpack_from(">I", payload, bstart + hdr)[0]
            if flags & 1:
                body = struct.pack(">I", 0) + location + b"\0"  # version 0, flags 0
                out.append(box_header(b"url ", len(body), large) + body)
                changed += 1
                pos = bend
                continue
        out.append(payload[bstart:bend])
        pos = bend
    if changed == 0 or count < 1:
        raise ValueError("no self-contained url entry in dref")
    return b"".join(out), changed


def rewrite_mp4(data, start, end, location, stats, path=()):
    out = []
    for btype, bstart, hdr, bend, large in iter_boxes(data, start, end):
        if btype in MP4_CONTAINERS:
            payload = rewrite_mp4(data, bstart + hdr, bend, location, stats, path + (btype,))
            out.append(box_header(btype, len(payload), large) + payload)
        elif btype == b"dref" and path[-2:] == (b"minf", b"dinf"):
            payload, n = rewrite_dref(data[bstart + hdr:bend], location)
            stats["url_entries"] += n
            stats["traks"].add(path)
            out.append(box_header(btype, len(payload), large) + payload)
        else:
            out.append(data[bstart:bend])
    return b"".join(out)


def make_dref(src_mp4, dst, secret):
    data = open(src_mp4, "rb").read()
    top = [b[0] for b in iter_boxes(data, 0, len(data))]
    if b"moov" not in top or b"mdat" not in top or top.index(b"moov") < top.index(b"mdat"):
        raise ValueError("expected moov after mdat, got %r" % top)
    stats = {"url_entries": 0, "traks": set()}
    new = rewrite_mp4(data, 0, len(data), ("file://" + secret).encode(), stats)
    ntrak = sum(1 for b in iter_boxes(data, 0, len(data)) if b[0] == b"moov"
                for t in iter_boxes(data, b[1] + b[2], b[3]) if t[0] == b"trak")
    if stats["url_entries"] < ntrak:
        raise ValueError("rewrote %d url entries for %d traks" % (stats["url_entries"], ntrak))
    # Re-parse the whole tree to prove every size is consistent.
    check_mp4_tree(new, 0, len(new))
    with open(dst, "wb") as f:
        f.write(new)


def check_mp4_tree(data, start, end, depth=0):
    for btype, bstart, hdr, bend, large in iter_boxes(data, start, end):
        if btype in MP4_CONTAINERS:
            check_mp4_tree(data, bstart + hdr, bend, depth + 1)
        elif btype == b"dref":
            list(iter_boxes(data, bstart + hdr + 8, bend))


# --------------------------------------------------------------------------
# Matroska (EBML) handling
# --------------------------------------------------------------------------

def read_vint(data, pos, keep_marker):
    first = data[pos]
    length = 1
    mask = 0x80
    while length <= 8 and not (first & mask):
        mask >>= 1
        length += 1
    if length > 8:
        raise ValueError("bad EBML vint at %d" % pos)
    value = first if keep_marker else first & (mask - 1)
    for i in range(1, length):
        value = (value << 8) | data[pos + i]
    unknown = (not keep_marker) and value == (1 << (7 * length)) - 1
    return value, length, unknown


def iter_ebml(data, start, end):
    """Yield (id, elem_start, data_start, data_end) for elements in data[start:end]."""
    pos = start
    while pos < end:
        eid, idlen, _ = read_vint(data, pos, True)
        size, szlen, unknown = read_vint(data, pos + idlen, False)
        dstart = pos + idlen + szlen
        dend = end if unknown else dstart + size
        if dend > end:
            raise ValueError("EBML element 0x%X overruns parent" % eid)
        yield eid, pos, dstart, dend
        pos = dend


SEGMENT, INFO, DURATION, TIMECODESCALE, CLUSTER = 0x18538067, 0x1549A966, 0x4489, 0x2AD7B1, 0x1F43B675
CLUSTER_TS, SIMPLEBLOCK, BLOCKGROUP, BLOCK = 0xE7, 0xA3, 0xA0, 0xA1


def segment_range(data):
    for eid, _, ds, de in iter_ebml(data, 0, len(data)):
        if eid == SEGMENT:
            return ds, de
    raise ValueError("no Segment")


def patch_mkv_duration(path, ticks):
    """Overwrite Segment/Info/Duration (id 0x4489, 8-byte float) in place."""
    data = bytearray(open(path, "rb").read())
    s, e = segment_range(data)
    for eid, _, ds, de in iter_ebml(data, s, e):
        if eid != INFO:
            continue
        for cid, cs, cds, cde in iter_ebml(data, ds, de):
            if cid == DURATION:
                if cde - cds != 8 or data[cs:cs + 3] != b"\x44\x89\x88":
                    raise ValueError("unexpected Duration encoding")
                data[cds:cde] = struct.pack(">d", ticks)
                open(path, "wb").write(data)
                return
    raise ValueError("no Segment/Info/Duration")


def mkv_blocks(data):
    """Yield (time_ticks, payload_start, payload_end) for every (Simple)Block."""
    s, e = segment_range(data)
    for eid, _, ds, de in iter_ebml(data, s, e):
        if eid != CLUSTER:
            continue
        cts = 0
        for cid, _, cds, cde in iter_ebml(data, ds, de):
            if cid == CLUSTER_TS:
                cts = int.from_bytes(data[cds:cde], "big")
            elif cid in (SIMPLEBLOCK, BLOCKGROUP):
                blocks = [(cds, cde)] if cid == SIMPLEBLOCK else \
                    [(b, c) for i, _, b, c in iter_ebml(data, cds, cde) if i == BLOCK]
                for bs, be in blocks:
                    _, tnlen, _ = read_vint(data, bs, False)
                    rel = struct.unpack_from(">h", data, bs + tnlen)[0]
                    flags = data[bs + tnlen + 2]
                    if flags & 0x06:
                        raise ValueError("laced block not expected")
                    yield cts + rel, bs + tnlen + 3, be


def corrupt_mkv_after(path, after_ms, every):
    """Corrupt every `every`-th video packet at or after `after_ms`: the 4-byte
    AVCC NAL length prefix and 64 bytes of slice data are overwritten.  Only
    packet payload bytes change; EBML structure stays intact."""
    data = bytearray(open(path, "rb").read())
    n = hit = 0
    for t, ps, pe in mkv_blocks(data):
        if t < after_ms:
            continue
        n += 1
        if (n - 1) % every:
            continue
        hit += 1
        data[ps:ps + 4] = b"\xff\xff\xff\xf0"
        mid = ps + (pe - ps) // 2
        for i in range(mid, min(mid + 64, pe)):
            data[i] ^= 0xA5
    open(path, "wb").write(data)
    return hit, n


# --------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------

def concat_quote(path):
    return path.replace("'", "'\\''")


def hls_playlist(secret):
    return ("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n"
            "#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10.0,\n%s\n#EXT-X-ENDLIST\n" % secret).encode()


def build(out, secret, tmp):
    manifest = []

    def add(name, what):
        manifest.append({"file": name, "what": what})

    def p(name):
        return os.path.join(out, name)

    def t(name):
        return os.path.join(tmp, name)

    # --- ffmpeg jobs (independent; run two at a time) ---------------------
    jobs = {
        # small real MP4 with video+audio, moov at the end (no faststart)
        "base.mp4": lambda: ffmpeg(
            "-f", "lavfi", "-i", "testsrc2=s=160x120:r=10:d=1",
            "-f", "lavfi", "-i", "sine=f=440:sample_rate=22050:d=1",
            *x264(), "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "32k",
            *BITEXACT, t("base.mp4")),
        "pixel": lambda: ffmpeg(
            "-f", "lavfi", "-i", "color=c=gray:s=12000x12000:r=25:d=0.04",
            "-frames:v", "1", "-c:v", "mjpeg", "-pix_fmt", "yuvj420p",
            *BITEXACT, p("pixel_bomb.mkv")),
        "tiny": lambda: ffmpeg(
            "-f", "lavfi", "-i", "color=c=red:s=16x16:r=1:d=1,scale=1:1",
            *x264(), "-pix_fmt", "yuv444p", *BITEXACT, p("tiny_12h.mkv")),
        "clip64.mp4": lambda: ffmpeg(
            "-f", "lavfi", "-i", "testsrc2=s=64x64:r=5:d=1",
            *x264(), "-pix_fmt", "yuv420p", *BITEXACT, t("clip64.mp4")),
        "gif": lambda: ffmpeg(
            "-f", "lavfi", "-i", "testsrc2=s=64x64:r=10:d=1",
            "-loop", "0", *BITEXACT, p("anim.gif")),
        "lying": lambda: ffmpeg(
            "-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=20",
            *x264(), "-pix_fmt", "yuv420p", *BITEXACT, p("lying_duration.mkv")),
        "wide": lambda: ffmpeg(
            "-f", "lavfi", "-i", "testsrc2=s=8320x32:r=25:d=1",
            "-vf", "setsar=1/4", *x264(), "-pix_fmt", "yuv420p",
            *BITEXACT, p("anamorphic_wide.mkv")),
        # 10 s, one IDR at the start (keyint 250 > 250 frames)
        "corrupt": lambda: ffmpeg(
            "-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=10",
            *x264("-g", "250"), "-pix_fmt", "yuv420p",
            *BITEXACT, p("corrupt_after_start.mkv")),
    }
    with ThreadPoolExecutor(max_workers=2) as ex:
        for f in [ex.submit(fn) for fn in jobs.values()]:
            f.result()

    # 1. HLS playlist disguised as MP4
    open(p("playlist.m3u8.mp4"), "wb").write(hls_playlist(secret))
    add("playlist.m3u8.mp4", "HLS playlist (#EXTM3U) named .mp4 whose only segment is SECRET_PATH")

    # 2. ffconcat list
    open(p("concat.mp4"), "wb").write(
        ("ffconcat version 1.0\nfile '%s'\nduration 10\nfile 'file:%s'\n"
         % (concat_quote(secret), concat_quote(secret))).encode())
    add("concat.mp4", "ffconcat script naming SECRET_PATH (plain and file: URL)")

    # 3. MP4 with external data references
    make_dref(t("base.mp4"), p("dref.mp4"), secret)
    add("dref.mp4", "real MP4 (moov after mdat) whose dref 'url ' entries in every trak point to file://SECRET_PATH")

    # 4. pixel bomb
    add("pixel_bomb.mkv", "one MJPEG frame of 12000x12000 (144 Mpx) in Matroska")

    # 5. 1x1 video claiming 12 h
    patch_mkv_duration(p("tiny_12h.mkv"), 43200000.0)
    add("tiny_12h.mkv", "1x1 H.264 1 s video whose Segment Info Duration claims 12 h (43200 s)")

    # 6. truncated MP4
    data = open(t("base.mp4"), "rb").read()
    open(p("truncated.mp4"), "wb").write(data[:len(data) // 2])
    add("truncated.mp4", "real MP4 cut in half: moov (at the end) missing")

    # 7. 1000 video streams
    maps = []
    for _ in range(1000):
        maps += ["-map", "0:v"]
    ffmpeg("-i", t("clip64.mp4"), *maps, "-c", "copy", *BITEXACT, p("streams_1000.mp4"))
    add("streams_1000.mp4", "MP4 with 1000 copies of a 64x64 1 s H.264 video stream")
    ffmpeg("-i", t("clip64.mp4"), *maps[:80], "-c", "copy", *BITEXACT, p("streams_40.mp4"))
    add("streams_40.mp4", "MP4 with 40 copies of a 64x64 1 s H.264 video stream (over 32, under -max_streams)")

    # 8. plain text, 9. empty
    open(p("text.mp4"), "wb").write(b"This is not a video.\nJust some plain text, named .mp4.\n" * 4)
    add("text.mp4", "plain ASCII text named .mp4")
    open(p("empty.mp4"), "wb").close()
    add("empty.mp4", "zero-byte file")

    # 10. SVG referencing the secret, animated GIF
    xml_secret = xml.sax.saxutils.quoteattr(secret)[1:-1]
    open(p("image.svg"), "wb").write((
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        'width="64" height="64" viewBox="0 0 64 64">\n'
        '  <rect width="64" height="64" fill="#08f"/>\n'
        '  <image x="0" y="0" width="64" height="64" href="file://%s" xlink:href="file://%s"/>\n'
        '</svg>\n' % (xml_secret, xml_secret)).encode())
    add("image.svg", "SVG image with <image href=file://SECRET_PATH>")
    add("anim.gif", "real animated GIF, 64x64, 10 frames, 1 s")

    # 11. playlist + MP4 polyglot
    open(p("polyglot.mp4"), "wb").write(hls_playlist(secret) + data)
    add("polyglot.mp4", "HLS playlist naming SECRET_PATH followed by the bytes of a real MP4")

    # 12. lying duration
    patch_mkv_duration(p("lying_duration.mkv"), 1000.0)
    add("lying_duration.mkv", "20 s 320x240 H.264 MKV whose Segment Info Duration claims 1 s")

    # 13. anamorphic
    add("anamorphic_wide.mkv", "H.264 8320x32 coded, SAR 1:4 (display 2080x32)")

    # 14. corrupt after 1 s
    hit, n = corrupt_mkv_after(p("corrupt_after_start.mkv"), 1000, 2)
    add("corrupt_after_start.mkv",
        "10 s 320x240 H.264 MKV, first 1 s clean, then every 2nd packet's NAL length + slice bytes "
        "corrupted (%d/%d packets): ~45%% decode errors" % (hit, n))

    order = ["playlist.m3u8.mp4", "concat.mp4", "dref.mp4", "pixel_bomb.mkv", "tiny_12h.mkv",
             "truncated.mp4", "streams_40.mp4", "streams_1000.mp4", "text.mp4", "empty.mp4", "image.svg",
             "anim.gif", "polyglot.mp4", "lying_duration.mkv", "anamorphic_wide.mkv",
             "corrupt_after_start.mkv"]
    manifest.sort(key=lambda m: order.index(m["file"]))
    return manifest


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: make_corpus.py OUT_DIR SECRET_PATH")
    out, secret = sys.argv[1], sys.argv[2]
    if not os.path.isabs(secret):
        sys.exit("SECRET_PATH must be absolute")
    if shutil.which("ffmpeg") is None:
        sys.exit("ffmpeg not found on PATH")
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vidpipe-corpus-") as tmp:
        manifest = build(out, secret, tmp)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
