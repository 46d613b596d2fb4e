//! The public job and document status strings (the product contract).

pub const NEW: &str = "NEW";
pub const UNZIPPING_FILE: &str = "UNZIPPING FILE";
pub const UNZIP_FILE_SUCCESS: &str = "UNZIP FILE SUCCESS";
pub const UNZIP_FILE_FAILED: &str = "UNZIP FILE FAILED";
pub const PROCESSING_IMAGE: &str = "PROCESSING IMAGE";
pub const PROCESS_IMAGE_SUCCESS: &str = "PROCESS IMAGE SUCCESS";
pub const PROCESS_IMAGE_FAILED: &str = "PROCESS IMAGE FAILED";
pub const SUCCESS: &str = "SUCCESS";
pub const FAILED: &str = "FAILED";

/// Every status, in pipeline order.
pub const ALL: [&str; 9] = [
    NEW,
    UNZIPPING_FILE,
    UNZIP_FILE_SUCCESS,
    UNZIP_FILE_FAILED,
    PROCESSING_IMAGE,
    PROCESS_IMAGE_SUCCESS,
    PROCESS_IMAGE_FAILED,
    SUCCESS,
    FAILED,
];

pub fn is_final(status: &str) -> bool {
    status == SUCCESS || status == FAILED
}
