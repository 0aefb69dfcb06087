"""The driver's frame reader on a real socket pair: frames split across reads, several frames
in one read, a frame over the limit, and the ends of the stream."""

import socket
import threading

import pytest

from evedb.runtime.transport import BlockingFrameReader, FrameError, FrameTooLarge, encode_frame


@pytest.fixture
def sockets():
    left, right = socket.socketpair()
    left.settimeout(5)
    yield left, right
    left.close()
    right.close()


def test_a_frame_sent_one_byte_at_a_time_is_read_whole(sockets):
    reader_side, writer_side = sockets
    frame = encode_frame(["reply", list(range(50)), "x" * 300])

    def trickle():
        for i in range(len(frame)):
            writer_side.send(frame[i:i + 1])

    sender = threading.Thread(target=trickle)
    sender.start()
    assert BlockingFrameReader().read(reader_side, 1 << 20) == ["reply", list(range(50)), "x" * 300]
    sender.join()


def test_frames_arriving_together_are_each_returned_in_order(sockets):
    reader_side, writer_side = sockets
    frames = [["a", 1], ["b", "y" * 70_000], ["c", None]]  # the second is larger than one read
    writer_side.sendall(b"".join(encode_frame(frame) for frame in frames) + encode_frame(["d"])[:3])
    reader = BlockingFrameReader()
    assert [reader.read(reader_side, 1 << 20) for _ in frames] == frames
    writer_side.sendall(encode_frame(["d"])[3:])
    assert reader.read(reader_side, 1 << 20) == ["d"]


def test_a_length_over_the_limit_is_refused_before_its_payload_arrives(sockets):
    reader_side, writer_side = sockets
    writer_side.sendall((10_000).to_bytes(4, "big") + b"\x00" * 10)
    with pytest.raises(FrameTooLarge):
        BlockingFrameReader().read(reader_side, 1_000)


def test_a_clean_end_is_none_and_an_end_inside_a_frame_is_an_error(sockets):
    reader_side, writer_side = sockets
    writer_side.sendall(encode_frame(["whole"]) + encode_frame(["cut short"])[:6])
    writer_side.shutdown(socket.SHUT_WR)
    reader = BlockingFrameReader()
    assert reader.read(reader_side, 1 << 20) == ["whole"]
    with pytest.raises(FrameError, match="middle of a frame"):
        reader.read(reader_side, 1 << 20)
    other_reader, other_writer = socket.socketpair()
    other_writer.close()
    assert BlockingFrameReader().read(other_reader, 1 << 20) is None
    other_reader.close()


def test_bytes_that_are_not_msgpack_are_a_frame_error(sockets):
    reader_side, writer_side = sockets
    writer_side.sendall((3).to_bytes(4, "big") + b"\xc1\xc1\xc1")
    with pytest.raises(FrameError):
        BlockingFrameReader().read(reader_side, 1 << 20)
