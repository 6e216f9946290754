extension String {
    /// The longest prefix of at most `maxBytes` UTF-8 bytes that ends on a Unicode scalar
    /// boundary, so cutting a long text for the wire never leaves half a character (which
    /// would make the `str` invalid UTF-8 for the peer's decoder).
    func utf8Prefix(maxBytes: Int) -> Substring {
        let bytes = utf8
        guard bytes.count > maxBytes else { return self[...] }
        var end = bytes.index(bytes.startIndex, offsetBy: Swift.max(maxBytes, 0))
        // Step back over continuation bytes (10xxxxxx) to the start of the scalar they belong to.
        while end > bytes.startIndex && bytes[end] & 0xC0 == 0x80 { end = bytes.index(before: end) }
        return self[..<end]
    }
}
