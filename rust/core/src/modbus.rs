//! Modbus TCP framing for the two function codes the gateway needs: FC3 (read holding registers)
//! and FC16 (write multiple registers). Pure: bytes in, values or errors out, no socket.
//!
//! Every length and byte count that comes off the wire is checked before it is used, so a
//! malformed frame is an error and never a panic or an out-of-bounds slice. Device exceptions are
//! a separate variant from malformed frames: the first means "the PCS answered and said no", the
//! second "what came back is not Modbus", and they are reported differently upstream.

use std::fmt;

pub const FC_READ_HOLDING: u8 = 0x03;
pub const FC_WRITE_MULTIPLE: u8 = 0x10;
const EXCEPTION_FLAG: u8 = 0x80;
pub const MBAP_LEN: usize = 7;
/// The MBAP length field counts the unit id plus the PDU; a PDU is at most 253 bytes.
const MAX_MBAP_LENGTH: u16 = 254;
pub const MAX_READ_COUNT: u16 = 125;
pub const MAX_WRITE_COUNT: u16 = 123;

/// Why a frame could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The protocol identifier in the MBAP header was not 0.
    ProtocolId(u16),
    /// The MBAP length field is outside 2..=254.
    MbapLength(u16),
    /// The PDU is shorter or longer than its own fields say.
    PduLength {
        expected: usize,
        got: usize,
    },
    /// The byte count of a read response does not match the registers asked for.
    ByteCount {
        expected: usize,
        got: usize,
    },
    UnexpectedFunction {
        expected: u8,
        got: u8,
    },
    UnitMismatch {
        expected: u8,
        got: u8,
    },
    /// A write response does not echo the address and quantity of the request.
    EchoMismatch,
    /// A request we were asked to encode is itself invalid (count 0 or above the FC limit, or
    /// running past address 65535).
    BadRequest(&'static str),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ProtocolId(p) => write!(f, "protocol id {p} is not 0"),
            Self::MbapLength(l) => write!(f, "MBAP length {l} outside 2..=254"),
            Self::PduLength { expected, got } => write!(f, "PDU length {got}, expected {expected}"),
            Self::ByteCount { expected, got } => write!(f, "byte count {got}, expected {expected}"),
            Self::UnexpectedFunction { expected, got } => {
                write!(f, "function code {got:#04x}, expected {expected:#04x}")
            }
            Self::UnitMismatch { expected, got } => write!(f, "unit id {got}, expected {expected}"),
            Self::EchoMismatch => write!(f, "write response does not echo the request"),
            Self::BadRequest(why) => write!(f, "invalid request: {why}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// A Modbus exception code sent by the device (Modbus application protocol, section 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExceptionCode(pub u8);

impl ExceptionCode {
    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "illegal function",
            2 => "illegal data address",
            3 => "illegal data value",
            4 => "server device failure",
            5 => "acknowledge",
            6 => "server device busy",
            8 => "memory parity error",
            10 => "gateway path unavailable",
            11 => "gateway target device failed to respond",
            _ => "unknown exception",
        }
    }
}

impl fmt::Display for ExceptionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exception {} ({})", self.0, self.name())
    }
}

/// A response PDU that is not the expected success reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseError {
    /// The device answered with an exception for this function.
    Exception {
        function: u8,
        code: ExceptionCode,
    },
    Malformed(FrameError),
}

impl From<FrameError> for ResponseError {
    fn from(e: FrameError) -> Self {
        Self::Malformed(e)
    }
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exception { function, code } => write!(f, "device {code} on function {function}"),
            Self::Malformed(e) => write!(f, "malformed response: {e}"),
        }
    }
}

impl std::error::Error for ResponseError {}

/// One complete ADU split into header fields and its PDU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub transaction_id: u16,
    pub unit_id: u8,
    pub pdu: &'a [u8],
}

/// Finds the first complete frame at the start of `buf`.
///
/// `Ok(None)` means "need more bytes"; `Ok(Some((frame, used)))` consumed `used` bytes. A header
/// that can never start a valid frame is an error, so a caller never waits forever on garbage.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    if buf.len() < MBAP_LEN {
        return Ok(None);
    }
    let protocol = u16::from_be_bytes([buf[2], buf[3]]);
    if protocol != 0 {
        return Err(FrameError::ProtocolId(protocol));
    }
    let length = u16::from_be_bytes([buf[4], buf[5]]);
    if !(2..=MAX_MBAP_LENGTH).contains(&length) {
        return Err(FrameError::MbapLength(length));
    }
    // length counts the unit id (already in the 7-byte header) plus the PDU.
    let total = MBAP_LEN - 1 + usize::from(length);
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((
        Frame {
            transaction_id: u16::from_be_bytes([buf[0], buf[1]]),
            unit_id: buf[6],
            pdu: &buf[MBAP_LEN..total],
        },
        total,
    )))
}

fn adu(transaction_id: u16, unit_id: u8, pdu: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MBAP_LEN + pdu.len());
    out.extend_from_slice(&transaction_id.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    // pdu.len() <= 253 for every PDU built in this module.
    out.extend_from_slice(&((pdu.len() + 1) as u16).to_be_bytes());
    out.push(unit_id);
    out.extend_from_slice(pdu);
    out
}

fn check_span(address: u16, count: u16, max: u16) -> Result<(), FrameError> {
    if count == 0 || count > max {
        return Err(FrameError::BadRequest(
            "register count outside the function's limit",
        ));
    }
    if u32::from(address) + u32::from(count) > 0x1_0000 {
        return Err(FrameError::BadRequest("registers run past address 65535"));
    }
    Ok(())
}

/// FC3 request ADU.
pub fn encode_read_request(
    transaction_id: u16,
    unit_id: u8,
    address: u16,
    count: u16,
) -> Result<Vec<u8>, FrameError> {
    check_span(address, count, MAX_READ_COUNT)?;
    let mut pdu = [0u8; 5];
    pdu[0] = FC_READ_HOLDING;
    pdu[1..3].copy_from_slice(&address.to_be_bytes());
    pdu[3..5].copy_from_slice(&count.to_be_bytes());
    Ok(adu(transaction_id, unit_id, &pdu))
}

/// FC16 request ADU.
pub fn encode_write_request(
    transaction_id: u16,
    unit_id: u8,
    address: u16,
    values: &[u16],
) -> Result<Vec<u8>, FrameError> {
    let count = u16::try_from(values.len())
        .map_err(|_| FrameError::BadRequest("register count outside the function's limit"))?;
    check_span(address, count, MAX_WRITE_COUNT)?;
    let mut pdu = Vec::with_capacity(6 + 2 * values.len());
    pdu.push(FC_WRITE_MULTIPLE);
    pdu.extend_from_slice(&address.to_be_bytes());
    pdu.extend_from_slice(&count.to_be_bytes());
    pdu.push((2 * values.len()) as u8);
    for v in values {
        pdu.extend_from_slice(&v.to_be_bytes());
    }
    Ok(adu(transaction_id, unit_id, &pdu))
}

fn check_function(pdu: &[u8], function: u8) -> Result<(), ResponseError> {
    let Some(&fc) = pdu.first() else {
        return Err(FrameError::PduLength {
            expected: 1,
            got: 0,
        }
        .into());
    };
    if fc == function | EXCEPTION_FLAG {
        if pdu.len() != 2 {
            return Err(FrameError::PduLength {
                expected: 2,
                got: pdu.len(),
            }
            .into());
        }
        return Err(ResponseError::Exception {
            function,
            code: ExceptionCode(pdu[1]),
        });
    }
    if fc != function {
        return Err(FrameError::UnexpectedFunction {
            expected: function,
            got: fc,
        }
        .into());
    }
    Ok(())
}

/// Register values from an FC3 response PDU that answers a request for `count` registers.
pub fn decode_read_response(pdu: &[u8], count: u16) -> Result<Vec<u16>, ResponseError> {
    check_function(pdu, FC_READ_HOLDING)?;
    let expected = 2 * usize::from(count);
    let Some(&byte_count) = pdu.get(1) else {
        return Err(FrameError::PduLength {
            expected: 2 + expected,
            got: pdu.len(),
        }
        .into());
    };
    if usize::from(byte_count) != expected {
        return Err(FrameError::ByteCount {
            expected,
            got: usize::from(byte_count),
        }
        .into());
    }
    if pdu.len() != 2 + expected {
        return Err(FrameError::PduLength {
            expected: 2 + expected,
            got: pdu.len(),
        }
        .into());
    }
    Ok(pdu[2..]
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect())
}

/// Checks an FC16 response PDU against the request's address and count.
pub fn decode_write_response(pdu: &[u8], address: u16, count: u16) -> Result<(), ResponseError> {
    check_function(pdu, FC_WRITE_MULTIPLE)?;
    if pdu.len() != 5 {
        return Err(FrameError::PduLength {
            expected: 5,
            got: pdu.len(),
        }
        .into());
    }
    let echo_addr = u16::from_be_bytes([pdu[1], pdu[2]]);
    let echo_count = u16::from_be_bytes([pdu[3], pdu[4]]);
    if echo_addr != address || echo_count != count {
        return Err(FrameError::EchoMismatch.into());
    }
    Ok(())
}

/// Whether a reply's transaction id belongs to a request sent before `current`.
///
/// Ids wrap at 65536, so "older" is the half of the circle behind `current`. A client skips such
/// replies (they answer a request that already timed out) instead of mistaking them for the
/// answer to the request in flight.
pub fn is_older_transaction(reply: u16, current: u16) -> bool {
    let behind = current.wrapping_sub(reply);
    behind != 0 && behind <= 0x8000
}

/// A request as a server sees it; used by test servers and fuzzing of the framing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    ReadHolding { address: u16, count: u16 },
    WriteMultiple { address: u16, values: Vec<u16> },
}

/// Parses a request PDU (the server side of the two functions).
pub fn decode_request(pdu: &[u8]) -> Result<Request, FrameError> {
    match pdu.first() {
        Some(&FC_READ_HOLDING) => {
            if pdu.len() != 5 {
                return Err(FrameError::PduLength {
                    expected: 5,
                    got: pdu.len(),
                });
            }
            let address = u16::from_be_bytes([pdu[1], pdu[2]]);
            let count = u16::from_be_bytes([pdu[3], pdu[4]]);
            check_span(address, count, MAX_READ_COUNT)?;
            Ok(Request::ReadHolding { address, count })
        }
        Some(&FC_WRITE_MULTIPLE) => {
            if pdu.len() < 6 {
                return Err(FrameError::PduLength {
                    expected: 6,
                    got: pdu.len(),
                });
            }
            let address = u16::from_be_bytes([pdu[1], pdu[2]]);
            let count = u16::from_be_bytes([pdu[3], pdu[4]]);
            check_span(address, count, MAX_WRITE_COUNT)?;
            let bytes = usize::from(pdu[5]);
            if bytes != 2 * usize::from(count) {
                return Err(FrameError::ByteCount {
                    expected: 2 * usize::from(count),
                    got: bytes,
                });
            }
            if pdu.len() != 6 + bytes {
                return Err(FrameError::PduLength {
                    expected: 6 + bytes,
                    got: pdu.len(),
                });
            }
            let values = pdu[6..]
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            Ok(Request::WriteMultiple { address, values })
        }
        Some(&fc) => Err(FrameError::UnexpectedFunction {
            expected: FC_READ_HOLDING,
            got: fc,
        }),
        None => Err(FrameError::PduLength {
            expected: 1,
            got: 0,
        }),
    }
}

/// FC3 response ADU (server side).
pub fn encode_read_response(transaction_id: u16, unit_id: u8, values: &[u16]) -> Vec<u8> {
    let values = &values[..values.len().min(usize::from(MAX_READ_COUNT))];
    let mut pdu = Vec::with_capacity(2 + 2 * values.len());
    pdu.push(FC_READ_HOLDING);
    pdu.push((2 * values.len()) as u8);
    for v in values {
        pdu.extend_from_slice(&v.to_be_bytes());
    }
    adu(transaction_id, unit_id, &pdu)
}

/// FC16 response ADU (server side).
pub fn encode_write_response(
    transaction_id: u16,
    unit_id: u8,
    address: u16,
    count: u16,
) -> Vec<u8> {
    let mut pdu = [0u8; 5];
    pdu[0] = FC_WRITE_MULTIPLE;
    pdu[1..3].copy_from_slice(&address.to_be_bytes());
    pdu[3..5].copy_from_slice(&count.to_be_bytes());
    adu(transaction_id, unit_id, &pdu)
}

/// Exception response ADU (server side).
pub fn encode_exception(transaction_id: u16, unit_id: u8, function: u8, code: u8) -> Vec<u8> {
    adu(transaction_id, unit_id, &[function | EXCEPTION_FLAG, code])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn read_request_bytes() {
        let req = encode_read_request(0x0102, 1, 100, 28).unwrap();
        assert_eq!(req, vec![1, 2, 0, 0, 0, 6, 1, 3, 0, 100, 0, 28]);
    }

    #[test]
    fn write_request_bytes() {
        let req = encode_write_request(7, 1, 0, &[1, 0xFFFF, 0xFFFE, 3, 0]).unwrap();
        assert_eq!(
            req,
            vec![
                0, 7, 0, 0, 0, 17, 1, 0x10, 0, 0, 0, 5, 10, 0, 1, 0xFF, 0xFF, 0xFF, 0xFE, 0, 3, 0,
                0
            ]
        );
    }

    #[test]
    fn request_limits() {
        assert!(encode_read_request(0, 1, 0, 0).is_err());
        assert!(encode_read_request(0, 1, 0, 126).is_err());
        assert!(encode_read_request(0, 1, 65535, 2).is_err());
        assert!(encode_read_request(0, 1, 65535, 1).is_ok());
        assert!(encode_write_request(0, 1, 0, &[]).is_err());
        assert!(encode_write_request(0, 1, 0, &[0; 124]).is_err());
    }

    #[test]
    fn frame_needs_whole_header_and_body() {
        let full = encode_read_response(9, 1, &[1, 2]);
        for cut in 0..full.len() {
            assert_eq!(parse_frame(&full[..cut]), Ok(None), "cut at {cut}");
        }
        let (frame, used) = parse_frame(&full).unwrap().unwrap();
        assert_eq!(used, full.len());
        assert_eq!(frame.transaction_id, 9);
        assert_eq!(decode_read_response(frame.pdu, 2), Ok(vec![1, 2]));
    }

    #[test]
    fn bad_headers_are_errors() {
        assert_eq!(
            parse_frame(&[0, 1, 0, 1, 0, 3, 1]),
            Err(FrameError::ProtocolId(1))
        );
        assert_eq!(
            parse_frame(&[0, 1, 0, 0, 0, 1, 1]),
            Err(FrameError::MbapLength(1))
        );
        assert_eq!(
            parse_frame(&[0, 1, 0, 0, 1, 0, 1]),
            Err(FrameError::MbapLength(256))
        );
    }

    #[test]
    fn read_response_checks() {
        // byte count 0, the rmodbus panic case
        assert_eq!(
            decode_read_response(&[3, 0], 28),
            Err(ResponseError::Malformed(FrameError::ByteCount {
                expected: 56,
                got: 0
            }))
        );
        assert_eq!(
            decode_read_response(&[3, 4, 0, 1], 2),
            Err(ResponseError::Malformed(FrameError::PduLength {
                expected: 6,
                got: 4
            }))
        );
        assert_eq!(
            decode_read_response(&[3, 4, 0, 1, 0, 2, 9], 2),
            Err(ResponseError::Malformed(FrameError::PduLength {
                expected: 6,
                got: 7
            }))
        );
        assert_eq!(
            decode_read_response(&[3], 2),
            Err(ResponseError::Malformed(FrameError::PduLength {
                expected: 6,
                got: 1
            }))
        );
        assert_eq!(
            decode_read_response(&[], 2),
            Err(ResponseError::Malformed(FrameError::PduLength {
                expected: 1,
                got: 0
            }))
        );
        assert_eq!(
            decode_read_response(&[0x10, 0, 0, 0, 1], 1),
            Err(ResponseError::Malformed(FrameError::UnexpectedFunction {
                expected: 3,
                got: 0x10
            }))
        );
    }

    #[test]
    fn exceptions_are_their_own_variant() {
        assert_eq!(
            decode_read_response(&[0x83, 2], 28),
            Err(ResponseError::Exception {
                function: 3,
                code: ExceptionCode(2)
            })
        );
        assert_eq!(
            decode_write_response(&[0x90, 4], 0, 5),
            Err(ResponseError::Exception {
                function: 16,
                code: ExceptionCode(4)
            })
        );
        assert!(matches!(
            decode_read_response(&[0x83], 28),
            Err(ResponseError::Malformed(_))
        ));
        assert_eq!(ExceptionCode(2).name(), "illegal data address");
    }

    #[test]
    fn write_response_checks() {
        assert_eq!(decode_write_response(&[0x10, 0, 0, 0, 5], 0, 5), Ok(()));
        assert_eq!(
            decode_write_response(&[0x10, 0, 1, 0, 5], 0, 5),
            Err(ResponseError::Malformed(FrameError::EchoMismatch))
        );
        assert!(decode_write_response(&[0x10, 0, 0, 0], 0, 5).is_err());
    }

    #[test]
    fn transaction_age() {
        assert!(is_older_transaction(4, 5));
        assert!(!is_older_transaction(5, 5));
        assert!(!is_older_transaction(6, 5));
        assert!(is_older_transaction(65535, 0));
        assert!(!is_older_transaction(1, 0));
    }

    #[test]
    fn server_side_round_trip() {
        let req = encode_write_request(3, 1, 10, &[5, 6]).unwrap();
        let (f, _) = parse_frame(&req).unwrap().unwrap();
        assert_eq!(
            decode_request(f.pdu),
            Ok(Request::WriteMultiple {
                address: 10,
                values: vec![5, 6]
            })
        );
        let req = encode_read_request(3, 1, 100, 28).unwrap();
        let (f, _) = parse_frame(&req).unwrap().unwrap();
        assert_eq!(
            decode_request(f.pdu),
            Ok(Request::ReadHolding {
                address: 100,
                count: 28
            })
        );
        let ex = encode_exception(3, 1, 3, 2);
        let (f, _) = parse_frame(&ex).unwrap().unwrap();
        assert!(matches!(
            decode_read_response(f.pdu, 1),
            Err(ResponseError::Exception { .. })
        ));
    }

    proptest! {
        // The whole point of checking lengths: arbitrary bytes never panic any decoder.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300),
                                       count in 0u16..200, addr in any::<u16>()) {
            let _ = parse_frame(&bytes);
            let _ = decode_read_response(&bytes, count);
            let _ = decode_write_response(&bytes, addr, count);
            let _ = decode_request(&bytes);
        }

        #[test]
        fn read_round_trip(values in proptest::collection::vec(any::<u16>(), 1..=125usize),
                           tid in any::<u16>(), unit in any::<u8>()) {
            let adu = encode_read_response(tid, unit, &values);
            let (frame, used) = parse_frame(&adu).unwrap().unwrap();
            prop_assert_eq!(used, adu.len());
            prop_assert_eq!(frame.transaction_id, tid);
            prop_assert_eq!(frame.unit_id, unit);
            prop_assert_eq!(decode_read_response(frame.pdu, values.len() as u16).unwrap(), values);
        }

        #[test]
        fn write_request_round_trip(values in proptest::collection::vec(any::<u16>(), 1..=123usize),
                                    addr in 0u16..1000) {
            let adu = encode_write_request(1, 1, addr, &values).unwrap();
            let (frame, _) = parse_frame(&adu).unwrap().unwrap();
            prop_assert_eq!(decode_request(frame.pdu).unwrap(),
                            Request::WriteMultiple { address: addr, values });
        }
    }
}
