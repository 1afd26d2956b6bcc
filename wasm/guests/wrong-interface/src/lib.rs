//! A component of another world (`process` takes a number), for the test
//! that weir refuses it at load with a clear error.

wit_bindgen::generate!({
    inline: "
        package test:wrong;
        world other {
            export process: func(x: u32) -> u32;
        }
    ",
});

struct Other;

impl Guest for Other {
    fn process(x: u32) -> u32 {
        x + 1
    }
}

export!(Other);
