/// Splits a byte stream of concatenated JSON objects (the gateway's streaming answers:
/// one object per message, newline-separated, arriving in arbitrary chunks) into whole
/// objects. Tracks brace depth outside strings; keeps no more than one partial object.
struct JSONObjectSplitter {
    private var buffer: [UInt8] = []
    private var depth = 0
    private var inString = false
    private var escaped = false
    private var start: Int?
    private var scanned = 0

    /// Appends `bytes`; returns every object completed by them, in order.
    mutating func feed(_ bytes: some Sequence<UInt8>) -> [[UInt8]] {
        buffer.append(contentsOf: bytes)
        var objects: [[UInt8]] = []
        var i = scanned
        while i < buffer.count {
            let b = buffer[i]
            if inString {
                if escaped { escaped = false }
                else if b == UInt8(ascii: "\\") { escaped = true }
                else if b == UInt8(ascii: "\"") { inString = false }
            } else if b == UInt8(ascii: "\"") {
                inString = true
            } else if b == UInt8(ascii: "{") {
                if depth == 0 { start = i }
                depth += 1
            } else if b == UInt8(ascii: "}"), depth > 0 {
                depth -= 1
                if depth == 0, let s = start {
                    objects.append(Array(buffer[s...i]))
                    start = nil
                }
            }
            i += 1
        }
        // Drop what has been consumed, keeping a partial object.
        if let s = start {
            buffer.removeFirst(s)
            start = 0
            scanned = buffer.count
        } else {
            buffer.removeAll(keepingCapacity: true)
            scanned = 0
        }
        return objects
    }
}
