"""The table of platform limits: the one place that says how big a function may be and what it may carry.

Read by the bundle builder (size check of what it wrote) and by the optimizer's budget (what a candidate
may weigh once the runtime's wheels are added). Every figure is the documented one, with its source; where
a platform documents none, the row says so and what we hold to instead. Change a figure here, nowhere else.

Units are bytes and seconds. AWS counts its "MB" in MiB: GetAccountSettings reports CodeSizeZipped
52,428,800 and CodeSizeUnzipped 262,144,000 (50 and 250 × 2**20); Google's and Microsoft's pages give
decimal-looking "MB"/"GB" without saying which, so the stricter reading (10**6) is used for them.

Which ceilings bind depends on how the package is uploaded. AWS's 50 MiB zipped limit holds only for a zip
sent directly to Lambda (the API's ZipFile, the console, `serverless deploy function`); `serverless deploy`
uploads to S3 and points CloudFormation at it, where only the 250 MiB unzipped limit binds. Such a limit is
marked `direct_upload_only`; `Platform.package_limits(direct_upload)` is what a bundle must meet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

KB, MB, GB = 1000, 1000**2, 1000**3
KiB, MiB, GiB = 1024, 1024**2, 1024**3

AWS_QUOTAS = "https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html"
AWS_ACCOUNT_LIMIT = "https://docs.aws.amazon.com/lambda/latest/api/API_AccountLimit.html"
AWS_HTTP_API_QUOTAS = "https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-quotas.html"
GCF_QUOTAS = "https://cloud.google.com/functions/quotas"
AZURE_LIMITS = "https://learn.microsoft.com/azure/azure-functions/functions-scale#service-limits"
AWS_MEMORY = "https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html"
AWS_LIFECYCLE = "https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html"
GCF_MEMORY = "https://cloud.google.com/functions/docs/configuring/memory"

# Lambda gives CPU in proportion to memory: "at 1,769 MB, a function has the equivalent of one vCPU" (AWS_MEMORY).
LAMBDA_MB_PER_VCPU = 1769
LAMBDA_MEMORY_MB = (128, 10_240)  # any whole MB in this range (AWS_MEMORY)
# Cloud Run functions (GCF 2nd gen): the memory tiers and the vCPUs each gets by default (GCF_MEMORY).
GCF_TIERS_MB_VCPU = (
    (128, 0.083),
    (256, 0.167),
    (512, 0.333),
    (1024, 0.583),
    (2048, 1.0),
    (4096, 2.0),
    (8192, 2.0),
    (16_384, 4.0),
    (32_768, 8.0),
)
# Azure Consumption: one fixed 1.5 GB instance size, about one core (ACU 100) (AZURE_LIMITS).
AZURE_CONSUMPTION_MB_VCPU = (1536, 1.0)


@dataclass(frozen=True)
class SizeLimit:
    """A ceiling on what is deployed. `measure`: "zipped" (the archive) or "unzipped" (the files)."""

    what: str
    measure: str
    bytes: int
    source: str
    enforced_by_platform: bool = True  # False: the platform documents no ceiling; this is the budget we keep
    note: str = ""
    quote: str = ""  # the platform's own words, from `source`
    direct_upload_only: bool = False  # binds a package sent straight to the platform, not one it reads from storage


@dataclass(frozen=True)
class Platform:
    name: str
    runtime: str
    package: tuple[SizeLimit, ...]
    memory_bytes: int
    tmp_bytes: int
    request_bytes: int  # largest synchronous request body the function sees
    event_bytes: int  # largest event an event-driven invocation carries
    timeout_s: int  # longest invocation (HTTP where it differs)
    init_s: int | None  # how long cold start may take before the platform gives up; None: not documented apart
    sources: tuple[str, ...] = field(default=())
    # Past init_s, how long a cold start may still take. AWS_LIFECYCLE: "If all three tasks do not complete within
    # 10 seconds, Lambda retries the Init phase at the time of the first function invocation with the configured
    # function timeout." So the first request after such a cold start waits for the load, under the HTTP
    # function's 29 s (API Gateway's 30 s). (With SnapStart the init runs at publish, up to 130 s, but /tmp is
    # then at most 512 MB, too small for the models that need this.)
    first_request_s: int | None = None

    def package_limits(self, direct_upload: bool = False) -> tuple[SizeLimit, ...]:
        """The ceilings a package must meet: all of them for a direct upload, else those storage uploads keep."""
        return tuple(limit for limit in self.package if direct_upload or not limit.direct_upload_only)

    def direct_upload_limits(self) -> tuple[SizeLimit, ...]:
        """What binds only a direct upload (Lambda's 50 MiB zipped): the bundle warns when it is passed."""
        return tuple(limit for limit in self.package if limit.direct_upload_only)


PLATFORMS: dict[str, Platform] = {
    "aws-lambda": Platform(
        name="aws-lambda",
        runtime="python3.12 (Amazon Linux 2023, glibc 2.34: manylinux_2_28 wheels load)",
        package=(
            SizeLimit(
                "zip uploaded directly (API ZipFile, console, `serverless deploy function`)",
                "zipped",
                50 * MiB,
                AWS_ACCOUNT_LIMIT,
                note="`serverless deploy` uploads through S3, where it does not apply; `--direct-upload` holds a bundle to it",
                quote="CodeSizeZipped: The maximum size of a deployment package when it's uploaded directly to Lambda. "
                'Use Amazon S3 for larger files. (Quotas page: "50 MB (zipped, when uploaded through the Lambda API '
                'or SDKs). Upload larger files with Amazon S3.")',
                direct_upload_only=True,
            ),
            SizeLimit(
                "function code and layers, extracted",
                "unzipped",
                250 * MiB,
                AWS_QUOTAS,
                quote="CodeSizeUnzipped: The maximum size of a function's deployment package and layers when they're "
                'extracted. (Quotas page: "250 MB The maximum size of the contents of a deployment package, including '
                'layers and custom runtimes. (unzipped)")',
            ),
        ),
        memory_bytes=10_240 * MiB,
        tmp_bytes=10_240 * MiB,
        request_bytes=6 * MiB,  # synchronous invocation payload; API Gateway HTTP APIs cap bodies at 10 MB first
        event_bytes=256 * KiB,  # asynchronous invocation payload
        timeout_s=900,  # API Gateway HTTP API integrations give up after 30 s
        init_s=10,
        sources=(AWS_QUOTAS, AWS_ACCOUNT_LIMIT, AWS_HTTP_API_QUOTAS),
        first_request_s=29,  # serverless.yml's timeout for the HTTP function
    ),
    "gcp-functions": Platform(
        name="gcp-functions",
        runtime="python312 (Cloud Run functions, 2nd gen; the platform builds requirements.txt)",
        package=(
            SizeLimit(
                "source upload",
                "zipped",
                100 * MB,
                GCF_QUOTAS,
                enforced_by_platform=False,
                note="1st gen's 'max deployment size'; 2nd gen lists N/A, so 1st gen's figure is our budget",
            ),
            SizeLimit(
                "sources plus installed modules",
                "unzipped",
                500 * MB,
                GCF_QUOTAS,
                enforced_by_platform=False,
                note="1st gen's figure; 2nd gen lists N/A",
            ),
        ),
        memory_bytes=32 * GiB,
        tmp_bytes=32 * GiB,  # /tmp is in memory and shares the instance's memory
        request_bytes=32 * MB,
        event_bytes=512 * KB,  # Eventarc events
        timeout_s=3600,  # HTTP; event-driven functions stop at 540 s
        init_s=None,
        sources=(GCF_QUOTAS,),
    ),
    "azure-functions": Platform(
        name="azure-functions",
        runtime="Python 3.12 on Linux (Consumption plan; remote build installs requirements.txt)",
        package=(
            SizeLimit(
                "package, zipped",
                "zipped",
                1 * GB,
                AZURE_LIMITS,
                enforced_by_platform=False,
                note="no package ceiling is documented; the Consumption plan's persisted storage (1 GB) is the budget",
            ),
            SizeLimit(
                "app files plus installed modules",
                "unzipped",
                1 * GB,
                AZURE_LIMITS,
                enforced_by_platform=False,
                note="Consumption plan persisted storage, 1 GB",
            ),
        ),
        memory_bytes=1536 * MiB,
        tmp_bytes=500 * MB,  # Consumption plan temporary storage, 0.5 GB
        request_bytes=210 * MB,
        event_bytes=64 * KiB,  # a Storage queue message
        timeout_s=600,  # Consumption plan maximum; HTTP responses time out at 230 s in the load balancer
        init_s=None,
        sources=(AZURE_LIMITS,),
    ),
}


def memory_size_mb(target: str, needed_mb: float) -> int | None:
    """The smallest memory setting of `target` that holds `needed_mb`; None when none does.

    Lambda takes any whole MB from 128 to 10,240: we round up to a multiple of 64 MB, a size people read
    as a setting, not a measurement. GCF takes its tiers; Azure Consumption has one size.
    """
    if target == "aws-lambda":
        low, high = LAMBDA_MEMORY_MB
        size = max(low, int(-(-needed_mb // 64)) * 64)  # ceil to 64 MB
        return size if size <= high else None
    sizes = {"gcp-functions": [mb for mb, _ in GCF_TIERS_MB_VCPU], "azure-functions": [AZURE_CONSUMPTION_MB_VCPU[0]]}
    return next((mb for mb in sizes.get(target, ()) if mb >= needed_mb), None)


def vcpus_at(target: str, memory_mb: int) -> float:
    """The share of a CPU a function of `target` gets at `memory_mb`."""
    if target == "aws-lambda":
        return memory_mb / LAMBDA_MB_PER_VCPU
    if target == "gcp-functions":
        return next((cpu for mb, cpu in GCF_TIERS_MB_VCPU if mb >= memory_mb), GCF_TIERS_MB_VCPU[-1][1])
    return AZURE_CONSUMPTION_MB_VCPU[1]


def platform(name: str) -> Platform:
    try:
        return PLATFORMS[name]
    except KeyError:
        raise KeyError(f"no limits for {name!r}; known: {', '.join(PLATFORMS)}") from None


# --- how fast a fetched artifact arrives: what the optimizer's budget should assume for a cold start -----------

S3_PERFORMANCE = "https://docs.aws.amazon.com/AmazonS3/latest/userguide/optimizing-performance-design-patterns.html"
LAMBDA_NETWORK_MEASURED = "https://github.com/sjakthol/aws-network-benchmark#results-lambda"


@dataclass(frozen=True)
class Throughput:
    """A transfer rate, bytes per second, with its source. `documented`: False where the platform states none
    and the figure is someone's measurement, named in `source`."""

    what: str
    bytes_per_s: int
    source: str
    documented: bool = True
    quote: str = ""
    note: str = ""


S3_GET_PER_CONNECTION = Throughput(
    "one S3 GET connection, within a region",
    85 * MB,  # the low end of AWS's 85-90 MB/s
    S3_PERFORMANCE,
    quote="we suggest making concurrent requests for byte ranges of an object at the granularity of 8-16 MB. Make one "
    "concurrent request for each 85-90 MB/s of desired network throughput. To saturate a 10 Gb/s network interface "
    "card (NIC), you might use about 15 concurrent requests over separate connections.",
)
LAMBDA_NETWORK = Throughput(
    "a Lambda function's sustained network throughput, any memory size",
    600 * MB // 8,  # 600 Mbit/s
    LAMBDA_NETWORK_MEASURED,
    documented=False,
    note="AWS documents no default Lambda bandwidth; iperf3 from Lambda measured a stable ~600 Mbit/s at every "
    "memory size from 128 to 3008 MB (eu-west-1, eu-north-1, 2024-06), after a short burst to ~2.7 Gbit/s. AWS's "
    "opt-in enhanced bandwidth (2026-08: 625 Mbit/s at 2 GB up to 3,000 Mbit/s at 10 GB, outside a VPC) is not assumed.",
)


def s3_fetch_bytes_per_s(concurrency: int) -> int:
    """What a cold start on Lambda should assume when it fetches from S3 with `concurrency` ranged reads:
    each connection carries at most S3_GET_PER_CONNECTION, and all of them together the function's network."""
    return min(max(1, concurrency) * S3_GET_PER_CONNECTION.bytes_per_s, LAMBDA_NETWORK.bytes_per_s)


# The budget's figure at SLIMSERVE_FETCH_CONCURRENCY's default (8): the function's network binds, 75 MB/s.
S3_GET_BYTES_PER_S = s3_fetch_bytes_per_s(8)
S3_GET_SOURCE = (
    f"min(8 ranged reads x {S3_GET_PER_CONNECTION.bytes_per_s / MB:g} MB/s a connection ({S3_PERFORMANCE}), "
    f"a Lambda's sustained network {LAMBDA_NETWORK.bytes_per_s / MB:g} MB/s (measured, not documented: {LAMBDA_NETWORK_MEASURED}))"
)
