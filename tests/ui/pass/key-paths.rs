#![deny(warnings)]
//! Keys may call functions and name constants, enum variants and paths:
//! only lowercase one-segment names are taken for arguments (which keys
//! see by reference, hence `*id`).

use cbase::prelude::*;

const ROOT: u64 = 0;

fn owner_of(name: &str) -> u64 {
    name.len() as u64
}

#[cbase::service]
pub trait Files {
    #[reads(files[ROOT], files[owner_of(&name)], files[id.checked_add(1).unwrap_or(u64::MAX)])]
    fn open(&self, name: String, id: u64) -> Option<u64>;

    #[reads(Some(id), files[std::cmp::max(*id, ROOT)])]
    fn stat(&self, id: u64) -> bool;
}

#[derive(Default, State)]
pub struct MyFiles {
    files: Table<u64, u64>,
}

impl Files for MyFiles {
    fn open(&self, name: String, id: u64) -> Option<u64> {
        self.files
            .get(&owner_of(&name))
            .or(self.files.get(&(id + 1)))
    }
    fn stat(&self, id: u64) -> bool {
        self.files.contains_key(&id)
    }
}

fn main() {
    let service = FilesService(MyFiles::default());
    let ctx = Context::new(0, [0; 32]);
    for request in [
        FilesRequest::Open {
            name: "a".to_owned(),
            id: 1,
        },
        FilesRequest::Stat { id: 1 },
    ] {
        assert!(!request.access_set().is_exclusive());
        let _ = service.execute(request, &ctx);
    }
}
