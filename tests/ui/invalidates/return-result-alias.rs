use tiercache::invalidates;

#[derive(Debug)]
struct ApiError;

type ApiResult<T> = Result<T, ApiError>;

#[invalidates(keys = ["user:{id}"])]
async fn delete(id: u64) -> ApiResult<()> {
    let _ = id;
    Err(ApiError)
}

fn main() {}
