// Where GroupNorm's values lie, shared by the forward and backward shaders (the template value
// layout). LAST: channels last, x [B, C, H, W] stored as [B, H, W, C], the layout burn's
// convolutions read and write; otherwise x is contiguous [B, C, H, W]. LAST, C, S (= H W) and CG
// (= C / GROUPS) as the shader that inserts it defines.

// The i-th value, in memory order, of the group of image b that starts at channel c0.
fn group_index(b: u32, c0: u32, i: u32) -> u32 {
    if LAST {
        return (b * S + i / CG) * C + c0 + i % CG;
    }
    return (b * C + c0) * S + i;
}

// The channel of that value.
fn group_channel(c0: u32, i: u32) -> u32 {
    if LAST {
        return c0 + i % CG;
    }
    return c0 + i / S;
}

// Pixel p of channel ch of image b.
fn pixel_index(b: u32, ch: u32, p: u32) -> u32 {
    if LAST {
        return (b * S + p) * C + ch;
    }
    return (b * C + ch) * S + p;
}
