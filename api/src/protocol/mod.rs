//! Wire protocols the gateway speaks besides its own predict API, as pure codecs (no I/O, no
//! handlers): the routes translate between them and the providers' JSON.

pub mod oip;
