#!/usr/bin/env python3
"""Writes a valid ONNX model of about SIZE MiB (y = Identity(x), plus one large initializer),
streaming, without holding it in memory. SALT changes the graph name, so that each run of a
benchmark uploads distinct bytes. Usage: make_big_model.py OUT.onnx SIZE_MIB [SALT]"""
import sys


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(field, data):
    return varint(field << 3 | 2) + varint(len(data)) + data


def field_varint(field, v):
    return varint(field << 3) + varint(v)


def value_info(name):
    dims = field_bytes(1, field_bytes(2, b"batch")) + field_bytes(1, field_varint(1, 4))
    tensor = field_varint(1, 1) + field_bytes(2, dims)
    return field_bytes(1, name) + field_bytes(2, field_bytes(1, tensor))


def main():
    out, size_mib = sys.argv[1], int(sys.argv[2])
    salt = sys.argv[3].encode() if len(sys.argv) > 3 else b""
    weights = size_mib * 1024 * 1024
    node = field_bytes(1, b"x") + field_bytes(2, b"y") + field_bytes(4, b"Identity")
    graph_rest = field_bytes(1, node) + field_bytes(2, b"big" + salt) + field_bytes(11, value_info(b"x")) + field_bytes(12, value_info(b"y"))
    tensor_head = field_varint(1, weights // 4) + field_varint(2, 1) + field_bytes(8, b"w") + varint(9 << 3 | 2) + varint(weights)
    tensor_len = len(tensor_head) + weights
    init_head = varint(5 << 3 | 2) + varint(tensor_len)
    graph_len = len(init_head) + tensor_len + len(graph_rest)
    opset = field_bytes(1, b"") + field_varint(2, 17)
    prefix = field_varint(1, 8) + field_bytes(8, opset) + varint(7 << 3 | 2) + varint(graph_len) + init_head + tensor_head
    chunk = bytes(8 * 1024 * 1024)
    with open(out, "wb") as f:
        f.write(prefix)
        left = weights
        while left:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n
        f.write(graph_rest)


if __name__ == "__main__":
    main()
